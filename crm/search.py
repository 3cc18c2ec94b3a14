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


def latin_digits(value: str) -> str:
    """`value` with Arabic-Indic and Persian digits written as 0-9."""
    return value.translate(_DIGITS)


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


def search_forms(term: str, region: str | None) -> tuple[str, list[str]]:
    """What a search looks for: folded text, and the digits of a phone number as the country
    reads it (0501234567 → 966501234567), as typed (a fragment) and, since stored numbers are
    E.164, as typed after a national 0 («٠٥٥١٢٣» → 55123, which 966551234567 holds)."""
    typed = phone_digits(term)
    digits = {phone_digits(term, region), typed, typed.lstrip("0")}
    return fold_text(term), sorted(d for d in digits if len(d) >= 3)


def search_terms(term: str, region: str | None) -> tuple[str, list[str]]:
    """The LIKE patterns a search runs (the CRM's and the inbox's alike): `search_forms`."""
    text, digits = search_forms(term, region)
    return like_pattern(text), [like_pattern(d) for d in digits]


def matches(forms: tuple[str, list[str]], name: str, phone: str | None) -> bool:
    """Whether a name and an E.164 phone held in memory (not in a table) match a search's
    `search_forms`, as the search columns would."""
    text, digits = forms
    return ((bool(text) and text in fold_text(name))
            or (phone is not None and any(d in phone.lstrip("+") for d in digits)))


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
    # Superseded by wasl_customer_page (below) in migration 6d6ed635a715, which drops it; kept
    # for migration e5f6a7b8c9d0, which creates it, and for that migration's downgrade.
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


# The customer list's page, for lists that search or filter by tag
# (crm/customers/services/search.py).
# Returning every match, as the search functions above do, made a broad term («عبد», thousands of
# customers) cost all its matches before the list kept 50. This function returns the page
# itself, in the list's order after its cursor, with all the list's filters applied, in two
# steps: read the next `p_scan` customers in that order (an index scan: each sort has its
# index) keeping those that match — a broad term fills the page within a few hundred rows; if
# that did not fill it and more rows remain, the matches are rare, and the trigram and tag GIN
# indexes find all of them for a top-N sort (MATERIALIZED keeps the planner, which estimates
# LIKE badly, off ordered scans there). `p_sort` NULL returns every match in no order (counts,
# segments). The plans are made for each call's values (force_custom_plan), so the CASEs fold
# to the one sort asked for; the organization stays an expression, which keeps it in the GIN
# index conditions. Customers never contacted sort last: as '-infinity' (CONTACTED_ORDER).
CUSTOMER_PAGE_SORTS = ("newest", "oldest", "name", "score", "last_contacted")
CONTACTED_ORDER = "coalesce(last_contacted_at, '-infinity'::timestamptz)"
_CUSTOMER_PAGE_ARGUMENTS = (
    "p_search text, p_digits text[], p_tag text, p_stage bigint, p_owner bigint, p_source text, "
    "p_score_min integer, p_score_max integer, p_custom jsonb, p_sort text, "
    "p_after_id bigint, p_after_score integer, p_after_name text, "
    "p_after_contacted timestamptz, p_limit integer, p_scan integer")
_CUSTOMER_FILTERS = f"""organization_id = {_ORG} AND merged_into_id IS NULL
        AND (p_stage IS NULL OR stage_id = p_stage) AND (p_owner IS NULL OR owner_id = p_owner)
        AND (p_source IS NULL OR source = p_source)
        AND (p_score_min IS NULL OR score >= p_score_min)
        AND (p_score_max IS NULL OR score <= p_score_max)
        AND (p_custom IS NULL OR custom_fields @> p_custom)"""
_CUSTOMER_MATCH = """(p_search IS NULL OR search_name LIKE p_search
            OR search_email LIKE lower(p_search) OR search_phone LIKE ANY (p_digits))
        AND (p_tag IS NULL OR tags @> ARRAY[p_tag])"""
_CUSTOMER_AFTER = f"""(p_after_id IS NULL OR CASE p_sort
            WHEN 'newest' THEN id < p_after_id WHEN 'oldest' THEN id > p_after_id
            WHEN 'name' THEN (name, id) > (p_after_name, p_after_id)
            WHEN 'score' THEN (score, id) < (p_after_score, p_after_id)
            ELSE ({CONTACTED_ORDER}, id)
                < (coalesce(p_after_contacted, '-infinity'::timestamptz), p_after_id) END)"""
_CUSTOMER_ORDER = f"""CASE WHEN p_sort = 'score' THEN score END DESC,
            CASE WHEN p_sort = 'last_contacted' THEN {CONTACTED_ORDER} END DESC,
            CASE WHEN p_sort = 'name' THEN name END,
            CASE WHEN p_sort IN ('oldest', 'name') THEN id END,
            CASE WHEN p_sort NOT IN ('oldest', 'name') THEN id END DESC"""
_CUSTOMER_SORT_KEYS = "id, score, name, last_contacted_at"
CUSTOMER_PAGE_SIGNATURE = "wasl_customer_page({})".format(
    ", ".join(argument.split(maxsplit=1)[1] for argument in _CUSTOMER_PAGE_ARGUMENTS.split(", ")))
# Sorted by name, a term's matches cluster (the names with «عبد» sit in one stretch of the order,
# 72,000 rows down in the largest bench organization), so the first read finds none, and the GIN
# step visits every match in the heap to sort them (24,667 for «عبد»: about 60 ms).
# `ix_customers_name` covers the search columns (migration b0c4d3e8658e), so a search by name
# with no other filter can read the name order index-only, about CUSTOMER_PAGE_READ_RATIO times
# cheaper a row than the GIN step is a match; that pays only when the page ends close enough
# («فاطمة»'s 7,313 matches start 190,000 rows down: reading there costs twice the GIN step).
# So when the first read leaves the page short, a TABLESAMPLE of about CUSTOMER_PAGE_SAMPLE_PAGES
# pages (all of a smaller table) estimates both: the sampled rows up to the sample's share of a
# page of matches, and the sampled matches. Within CUSTOMER_PAGE_READ_RATIO rows a match, the
# name order is read that far (twice the estimate, for its error; the GIN step if even that
# falls short); beyond, or with too few matches sampled to tell, the GIN step runs at once.
# The sample only counts; the rows returned are still read under the organization's filter.
# Each step names itself at DEBUG level (the tests check which one answered).
CUSTOMER_PAGE_SAMPLE_PAGES = 150
CUSTOMER_PAGE_READ_RATIO = 12


def _ordered_read(scan: str) -> str:
    """Step 1: the next `scan` customers in the list's order, keeping the matches."""
    return f"""
    hits := ARRAY(SELECT id FROM (
        SELECT {_CUSTOMER_SORT_KEYS}, {_CUSTOMER_MATCH} AS hit FROM customers
        WHERE {_CUSTOMER_FILTERS} AND {_CUSTOMER_AFTER}
        ORDER BY {_CUSTOMER_ORDER} LIMIT {scan}) AS scanned
        WHERE hit ORDER BY {_CUSTOMER_ORDER} LIMIT p_limit);
    IF cardinality(hits) = p_limit OR (SELECT count(*) FROM (
            SELECT FROM customers WHERE {_CUSTOMER_FILTERS} AND {_CUSTOMER_AFTER}
            LIMIT {scan}) AS rest) < {scan} THEN
        RETURN QUERY SELECT unnest(hits);
        RETURN;
    END IF;"""


_CUSTOMER_DEEP_BY_NAME = f"""{_ordered_read("p_scan")}
    IF p_sort = 'name' AND p_search IS NOT NULL AND num_nulls(
            p_tag, p_stage, p_owner, p_source, p_score_min, p_score_max, p_custom) = 7 THEN
        percent := least(100, 100.0 * {CUSTOMER_PAGE_SAMPLE_PAGES}
            * current_setting('block_size')::integer / greatest(pg_relation_size('customers'), 1));
        share := ceil(p_limit * percent / 100);
        WITH sampled AS MATERIALIZED (
            SELECT name, id, {_CUSTOMER_MATCH} AS hit
            FROM customers TABLESAMPLE SYSTEM (percent) REPEATABLE (0)
            WHERE {_CUSTOMER_FILTERS} AND {_CUSTOMER_AFTER}),
        bound AS (SELECT name, id FROM sampled WHERE hit ORDER BY name, id OFFSET share - 1 LIMIT 1)
        SELECT (SELECT count(*) FROM sampled WHERE hit),
               (SELECT count(*) FROM sampled, bound
                WHERE (sampled.name, sampled.id) <= (bound.name, bound.id))
        INTO matching, reach;
        IF matching >= share AND reach <= matching * {CUSTOMER_PAGE_READ_RATIO} THEN
            budget := ceil(reach * 200 / percent);
            RAISE DEBUG 'wasl_customer_page: reading % rows in name order', budget;
            {_ordered_read("budget")}
        END IF;
    END IF;
    RAISE DEBUG 'wasl_customer_page: sorting every match';"""


def customer_page_sql(deep_by_name: bool = True) -> str:
    """The CREATE of `wasl_customer_page`; without `deep_by_name`, as migration 6d6ed635a715
    made it."""
    ordered, variables = _ordered_read("p_scan"), ""
    if deep_by_name:
        ordered, variables = _CUSTOMER_DEEP_BY_NAME, """
    percent numeric;
    share integer;
    matching bigint;
    reach bigint;
    budget bigint;"""
    return f"""
CREATE OR REPLACE FUNCTION wasl_customer_page({_CUSTOMER_PAGE_ARGUMENTS}) RETURNS SETOF bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp SET plan_cache_mode = force_custom_plan AS $body$
DECLARE
    hits bigint[];{variables}
BEGIN
    IF p_sort IS NULL THEN
        RETURN QUERY SELECT id FROM customers WHERE {_CUSTOMER_FILTERS} AND {_CUSTOMER_MATCH};
        RETURN;
    END IF;
    IF p_sort NOT IN ('{"', '".join(CUSTOMER_PAGE_SORTS)}') THEN
        RAISE EXCEPTION 'wasl_customer_page: no such sort %', p_sort;
    END IF;{ordered}
    RETURN QUERY WITH matches AS MATERIALIZED (
        SELECT {_CUSTOMER_SORT_KEYS} FROM customers
        WHERE {_CUSTOMER_FILTERS} AND {_CUSTOMER_AFTER} AND {_CUSTOMER_MATCH})
    SELECT id FROM matches ORDER BY {_CUSTOMER_ORDER} LIMIT p_limit;
END
$body$"""


# As migration 6d6ed635a715 created it (that migration imports it).
CUSTOMER_PAGE_SQL = customer_page_sql(deep_by_name=False)
