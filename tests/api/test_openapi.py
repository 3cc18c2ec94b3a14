"""The OpenAPI document is true: it and the app's /api routes match, method for method."""

import re

import schemathesis

from crm.api.kit import DECLARED

# The document is OpenAPI 3.1 (its schemas are JSON Schema 2020-12, as pydantic writes them).
schemathesis.experimental.OPEN_API_3_1.enable()

IGNORED_METHODS = {"HEAD", "OPTIONS"}
# Writes that take no body: the URL says everything (the caller's own token, one object).
WITHOUT_BODY = {
    "api.logout": "ends the token it is sent with",
    "api.disconnect_whatsapp_profile": "the number is in the URL",
    "api.mark_conversation_read": "the conversation is in the URL",
    "api.retry_whatsapp_message": "the message is in the URL",
    "api.open_payment_method_portal": "the organization's own Stripe customer",
    "api.keep_plan": "the organization's own subscription",
    "api.start_campaign": "the campaign is in the URL",
    "api.pause_campaign": "the campaign is in the URL",
    "api.resume_campaign": "the campaign is in the URL",
    "api.cancel_campaign": "the campaign is in the URL",
    "api.sync_templates": "the number is in the URL",
    "api.resend_email_change": "the caller's own waiting change of address",
}


def _is_api(rule) -> bool:
    # Stripe's webhook sits under /api by contract but is Stripe's door, not the API's.
    return rule.rule.startswith("/api/") and rule.endpoint.startswith("api.")


def _app_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for rule in app.url_map.iter_rules():
        if not _is_api(rule):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operations |= {(path, method.lower()) for method in rule.methods - IGNORED_METHODS}
    return operations


def _documented_operations(document: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, methods in document["paths"].items() for method in methods}


def test_openapi_json_is_served_publicly_and_valid(client):
    """GET /api/openapi.json needs no token and is a valid OpenAPI 3 document."""
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    schemathesis.openapi.from_dict(document, validate_schema=True)  # raises if invalid
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_api_route_is_documented_and_nothing_else(app, client):
    """Each /api rule and method is in the document, and the document names no other."""
    documented = _documented_operations(client.get("/api/openapi.json").get_json())
    actual = _app_operations(app)
    assert actual - documented == set(), "routes missing from the OpenAPI document"
    assert documented - actual == set(), "documented operations the app does not have"


def test_every_api_route_declares_its_body_and_answers(app):
    """Each /api route is declared with the API kit (crm/api/openapi.py Endpoints): a model
    for each success answer but a 204's, and a body model for each POST, PUT or PATCH unless
    it is listed as taking none; so the document is generated for every route."""
    for rule in app.url_map.iter_rules():
        if not _is_api(rule):
            continue
        declared = DECLARED.get(rule.endpoint)
        assert declared is not None, f"{rule.rule}: route it with crm.api.openapi.Endpoints"
        answers = {status: model for status, model in declared.items()
                   if isinstance(status, int) and 200 <= status < 300}
        assert answers, f"{rule.endpoint} declares no success answer"
        for status, model in answers.items():
            assert (model is None) == (status == 204), f"{rule.endpoint} answers {status}"
        if rule.methods & {"POST", "PUT", "PATCH"} and rule.endpoint not in WITHOUT_BODY:
            assert {"body", "form"} & declared.keys(), f"{rule.endpoint} declares no body"


def test_bodiless_writes_name_existing_routes(app):
    """WITHOUT_BODY names only endpoints that exist and indeed declare no body."""
    for endpoint in WITHOUT_BODY:
        assert endpoint in app.view_functions
        assert not {"body", "form"} & DECLARED[endpoint].keys()


def test_path_parameters_are_declared(client):
    """Every {name} in a documented path is declared as a path parameter of each operation."""
    document = client.get("/api/openapi.json").get_json()
    for path, methods in document["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in methods.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)


def test_every_operation_documents_503(client):
    """Any operation can meet a database or Redis outage (tests/test_outages.py)."""
    document = client.get("/api/openapi.json").get_json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert "503" in operation["responses"], (method, path)


def test_operations_with_a_token_document_401(client):
    """Every operation that needs a bearer token says it can answer 401."""
    document = client.get("/api/openapi.json").get_json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if operation.get("security") != []:
                assert "401" in operation["responses"], (method, path)
