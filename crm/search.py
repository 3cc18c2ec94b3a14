"""Search terms folded the way the database folds its search columns.

Arabic is written many ways: أ إ آ ا are one letter to a reader, so are ة ه and ى ي, and
diacritics and tatweel are decoration. Phone numbers are written as 0501234567,
+966 50 123 4567 or ٠٥٠١٢٣٤٥٦٧. Tables keep generated columns folded by the SQL function
`wasl_fold` (see SQL_FUNCTIONS, created by a migration) with trigram indexes; a query folds its
term here the same way, and never wraps an indexed column in a function at query time.
"""

from __future__ import annotations

import re

import phonenumbers

_LETTERS = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ة": "ه", "ى": "ي",
                          "ؤ": "و", "ئ": "ي"})
_DECORATION = re.compile("[\u064b-\u065f\u0670\u0640]")  # harakat, dagger alef, tatweel
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_NOT_DIGIT = re.compile(r"\D")

# Kept identical to fold_text() and test-checked against it (tests/test_search.py).
SQL_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION wasl_fold(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
  SELECT lower(translate(
    regexp_replace(value, '[\u064B-\u065F\u0670\u0640]', '', 'g'),
    'أإآٱةىؤئ٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹', 'ااااهيوي01234567890123456789'))
$$;
CREATE OR REPLACE FUNCTION wasl_digits(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
  SELECT regexp_replace(translate(value, '٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹',
                                  '01234567890123456789'), '\D', '', 'g')
$$;
"""


def fold_text(value: str) -> str:
    """Fold Arabic letter variants, drop diacritics and tatweel, lower-case."""
    return _DECORATION.sub("", value).translate(_LETTERS).translate(_DIGITS).lower()


def phone_digits(value: str, region: str | None = None) -> str:
    """The digits a phone search matches: E.164 digits when the term parses as a number of
    `region` (0501234567 in SA → 966501234567), else the digits as typed."""
    ascii_digits = value.translate(_DIGITS)
    digits = _NOT_DIGIT.sub("", ascii_digits)
    if len(digits) < 6:
        return digits
    try:
        number = phonenumbers.parse(ascii_digits, region)
    except phonenumbers.NumberParseException:
        return digits
    if phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    return digits


def normalize_phone(value: object, region: str | None) -> str | None:
    """A phone number in E.164 (+966501234567), or None when it is not a valid number."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        number = phonenumbers.parse(value.translate(_DIGITS), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def like_pattern(term: str) -> str:
    """A LIKE pattern matching `term` anywhere, with LIKE's wildcards escaped."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_terms(term: str, region: str | None) -> tuple[str, list[str]]:
    """The LIKE patterns a search runs: folded text, and the digits of a phone number both as
    the country reads it (0501234567 → 966501234567) and as typed (a fragment)."""
    digits = {phone_digits(term, region), phone_digits(term)}
    return like_pattern(fold_text(term)), sorted(like_pattern(d) for d in digits if len(d) >= 3)


# Under Row Level Security PostgreSQL turns a query's conditions into index conditions only
# when their operators are LEAKPROOF, and LIKE is not: as the application's role, a search
# would read every row of the organization. So searches run in SECURITY DEFINER functions
# (owned by the schema owner, read through its `owner_lookup` policy), which filter by the
# transaction's organization themselves and return only ids; the caller's query, still under
# RLS, loads the rows. Each branch is one indexed LIKE; branches are joined by UNION.
_ORG = "NULLIF(current_setting('app.current_organization_id', true), '')::bigint"
SEARCH_FUNCTIONS = {
    "wasl_matching_conversations(text, text[])": f"""
        SELECT id FROM conversations WHERE organization_id = {_ORG} AND search_name LIKE $1
        UNION
        SELECT conversation_id FROM messages WHERE organization_id = {_ORG}
            AND search_body LIKE $1
        UNION
        SELECT c.id FROM unnest($2) AS pattern, LATERAL (
            SELECT id FROM conversations WHERE organization_id = {_ORG}
                AND search_phone LIKE pattern) AS c""",
    "wasl_matching_customers(text, text[])": f"""
        SELECT id FROM customers WHERE organization_id = {_ORG} AND search_name LIKE $1
        UNION
        SELECT id FROM customers WHERE organization_id = {_ORG} AND search_email LIKE lower($1)
        UNION
        SELECT c.id FROM unnest($2) AS pattern, LATERAL (
            SELECT id FROM customers WHERE organization_id = {_ORG}
                AND search_phone LIKE pattern) AS c""",
}


def search_function_sql(signature: str) -> str:
    return (f"CREATE OR REPLACE FUNCTION {signature} RETURNS SETOF bigint LANGUAGE sql STABLE "
            f"SECURITY DEFINER SET search_path = public, pg_temp AS $body$"
            f"{SEARCH_FUNCTIONS[signature]}$body$")
