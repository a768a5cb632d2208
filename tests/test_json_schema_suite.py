"""The required draft 2020-12 JSON Schema Test Suite, against the committed expected outcomes.

Every instance of ``tests/draft2020-12/*.json`` is compiled, serialised, tokenised with llama3-128k and
walked (:mod:`constrain.suites`); its outcome is compared with
``tests/expected/json-schema-test-suite-draft2020-12.json``:

* a regression (an instance that passed and now does not, a new false positive, a new crash) fails
  ``test_no_regressions``;
* any other difference, improvements included, fails ``test_expected_file_is_current`` with the
  command that regenerates the file, so that a fix is recorded and can never silently regress;
* ``test_no_crashes`` fails on any exception that is not a ``ConstrainError`` (a bug, even if the
  expected file recorded it).

Skipped, with the reason, when ../shared (the suite and the tokenizer) is not beside the checkout.
"""

from __future__ import annotations

import pytest

from constrain_tools import suites as S

from .shared_data import SHARED, hf_tokenizer, tokenizer_info

SUITE_ROOT = SHARED / "data" / "json-schema-test-suite"
EXPECTED = S.DEFAULT_EXPECTED_PATH
TOKENIZER = "llama3-128k"


@pytest.fixture(scope="module")
def result() -> S.SuiteResult:
    if not SUITE_ROOT.exists():
        pytest.skip(f"../shared is absent (no {SUITE_ROOT}); CI provides it beside the checkout")
    hf = hf_tokenizer(TOKENIZER)
    tokenizer = S.TextTokenizer(
        tokenizer_info(TOKENIZER), lambda text: hf.encode(text, add_special_tokens=False).ids, TOKENIZER
    )
    suite = S.load_json_schema_test_suite(SUITE_ROOT, draft="2020-12")
    # No compile time limit: a timeout would depend on the machine (the expected file records none).
    return S.run_suite(suite, tokenizer, timeout_s=None, jobs=2)


@pytest.fixture(scope="module")
def diff(result: S.SuiteResult) -> S.OutcomeDiff:
    if not EXPECTED.exists():
        pytest.fail(f"{EXPECTED} is missing; generate it with: {S.REGENERATE_COMMAND}")
    return S.compare_outcomes(S.read_expected(EXPECTED), result.outcomes())


def test_suite_has_every_instance(result: S.SuiteResult) -> None:
    assert len(result.instances) == 1299


def test_no_regressions(diff: S.OutcomeDiff) -> None:
    if diff.has_regressions:
        pytest.fail(
            "the JSON Schema Test Suite regressed against "
            f"{EXPECTED.name} (expected -> now):\n{diff.format()}",
            pytrace=False,
        )


def test_no_crashes(result: S.SuiteResult) -> None:
    crashes = result.crashes()
    if crashes:
        lines = [
            f"{c.file} / {c.group}: {c.message if isinstance(c, S.SchemaResult) else c.detail}"
            for c in crashes
        ]
        pytest.fail(f"{len(crashes)} crash(es), bugs in constrain:\n" + "\n".join(lines), pytrace=False)


def test_expected_file_is_current(diff: S.OutcomeDiff) -> None:
    if not diff.is_current:
        pytest.fail(
            f"the suite's outcomes differ from {EXPECTED.name} without regressing. Record them with:\n"
            f"    {S.REGENERATE_COMMAND}\n"
            "and commit the file.\n" + diff.format(),
            pytrace=False,
        )
