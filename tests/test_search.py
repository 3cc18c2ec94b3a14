"""Search folding: the database and Python fold text and phone numbers the same way."""

import pytest
from sqlalchemy import text

from crm.extensions import db
from crm.search import (
    fold_text,
    like_pattern,
    matches,
    normalize_phone,
    phone_digits,
    search_forms,
    search_terms,
)

SAMPLES = ["أحمد", "إيمان", "آمنة", "مدرسة", "مستشفى", "مُحَمَّد", "عـــلي", "ٱلله", "مؤمن", "هيئة",
           "Ahmed AL-Qahtani", "٠٥٠١٢٣٤٥٦٧", "شركة الرَّيان ٣"]


@pytest.mark.parametrize("sample", SAMPLES)
def test_sql_and_python_fold_alike(sample):
    """wasl_fold() in PostgreSQL equals fold_text() in Python for every kind of variant."""
    folded = db.session.execute(text("SELECT wasl_fold(:v)"), {"v": sample}).scalar()
    assert folded == fold_text(sample)


def test_letter_variants_fold_to_one_form():
    """أ إ آ ا are one letter, so are ة ه and ى ي; diacritics and tatweel vanish."""
    assert fold_text("أحمد") == fold_text("احمد") == fold_text("إحمد")
    assert fold_text("مدرسة") == fold_text("مدرسه")
    assert fold_text("مستشفى") == fold_text("مستشفي")
    assert fold_text("مُحَمَّد") == fold_text("محمد") == fold_text("مـحـمـد")


@pytest.mark.parametrize("written", ["0501234567", "+966 50 123 4567", "٠٥٠١٢٣٤٥٦٧",
                                     "00966501234567", "(050) 123-4567"])
def test_phone_numbers_in_any_written_form_search_alike(written):
    """Local, international and Arabic-digit forms give the same digits to search by."""
    assert phone_digits(written, "SA") == "966501234567"
    digits = db.session.execute(text("SELECT wasl_digits(:v)"), {"v": "+966501234567"}).scalar()
    assert digits == "966501234567"


def test_partial_numbers_keep_their_digits():
    """A fragment of a number searches by the digits typed."""
    assert phone_digits("1234", "SA") == "1234"
    assert phone_digits("٥٦٧", "SA") == "567"


@pytest.mark.parametrize(("term", "fragment"), [("٠٥٥١٢٣", "%55123%"), ("551 234", "%551234%"),
                                              ("0551234", "%551234%")])
def test_the_start_of_a_local_number_searches_without_its_leading_zero(term, fragment):
    """Stored numbers are E.164 (966551234567): a fragment typed with the national 0 in front
    («٠٥٥١٢٣») searches by its digits after the 0, for the CRM and the inbox alike."""
    assert fragment in search_terms(term, "SA")[1]


def test_normalize_phone_refuses_what_is_not_a_number():
    assert normalize_phone("0501234567", "SA") == "+966501234567"
    assert normalize_phone("12", "SA") is None
    assert normalize_phone("not a phone", "SA") is None
    assert normalize_phone(None, "SA") is None


def test_like_patterns_escape_wildcards():
    assert like_pattern("50%_\\") == "%50\\%\\_\\\\%"


@pytest.mark.parametrize(("term", "found"), [
    ("احمد", True), ("أحمد الشمري", True), ("0559876543", True), ("٠٥٥٩٨٧", True),
    ("+966 55 987 6543", True), ("سارة", False), ("0501234567", False)])
def test_a_name_and_number_in_memory_match_as_the_search_columns_do(term, found):
    """A file's row (not in a table) is searched with the CRM's rules: letters folded, the
    number in any written form or a fragment of it."""
    assert matches(search_forms(term, "SA"), "أحمد الشمري", "+966559876543") is found
