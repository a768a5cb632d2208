"""The MaskBench step bench (constrain_tools.maskbench_steps) on three schemas: correctness first.

Each engine that is installed is teacher-forced along the same token path (every path token must be in
its mask and accepted; EOS allowed at the end); the peers' masks are compared with constrain's and the
differences printed, not asserted (the engines read some keywords differently). The worker pipeline
(one pinned process per engine) runs on two schemas with constrain. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from .shared_data import SHARED, tokenizer_path

pytest.importorskip("constrain_tools.maskbench_steps")

from constrain_tools import bench_common as bc
from constrain_tools import maskbench_steps as mbs

SAMPLE = SHARED / "data" / "jsonschemabench" / "maskbench" / "data"
# Three schemas every engine compiled and walked in a full run (three subsets).
PICKS = ("BFCL_java/BFCL_java_80", "BFCL_simple/BFCL_simple_134", "BFCL_sql/BFCL_sql_63")
PEER_MODULES = {"xgrammar": "xgrammar", "llguidance": "llguidance", "outlines-core": "outlines_core"}


@pytest.fixture(scope="module")
def cases() -> list[mbs.StepCase]:
    if not SAMPLE.is_dir():
        pytest.skip(f"../shared is absent (no {SAMPLE})")
    return mbs.load_cases(SAMPLE, tokenizer_path("llama3-128k"), 3, only=PICKS)


@pytest.fixture(scope="module")
def vocab() -> bc.Vocab:
    return bc.load_vocab(tokenizer_path("llama3-128k"))


def test_sample_is_spread_over_subsets_and_paths_spell_the_instances(
    cases: list[mbs.StepCase], vocab: bc.Vocab
) -> None:
    assert sorted(c.id for c in cases) == sorted(PICKS)
    assert len({c.subset for c in cases}) == 3
    for c in cases:
        assert b"".join(vocab.token_bytes[t] or b"" for t in c.tokens) == c.text.encode()
        assert json.loads(c.text) is not None  # the canonical text is JSON


def test_round_robin_takes_one_schema_per_subset_first() -> None:
    if not SAMPLE.is_dir():
        pytest.skip(f"../shared is absent (no {SAMPLE})")
    picked = mbs.load_cases(SAMPLE, tokenizer_path("llama3-128k"), 21)
    assert len({c.subset for c in picked}) == 21  # MaskBench has 21 subsets, each with valid instances


class _Case:
    """What bench_common.run_path reads of a case."""

    def __init__(self, c: mbs.StepCase) -> None:
        self.name, self.pattern, self.examples = c.id, c.schema_text, (c.text,)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the peers' imports (torch.jit) warn
def test_every_engine_allows_the_teacher_forced_tokens(
    cases: list[mbs.StepCase], vocab: bc.Vocab, capsys: pytest.CaptureFixture[str]
) -> None:
    adapters = mbs.schema_adapters()
    names = ["constrain"] + [n for n, mod in PEER_MODULES.items() if importlib.util.find_spec(mod)]
    rows: dict[str, list[list]] = {}
    for name in names:
        eng = adapters[name](vocab)
        bitmask = eng.new_bitmask()
        for c in cases:
            if hasattr(eng, "draft"):
                eng.draft = c.draft
            run = bc.run_path(eng, _Case(c), list(c.tokens), bitmask, check=True)
            assert not run.error, f"{name} on {c.id}: {run.error}"
            assert len(run.fill_ns) == len(c.tokens) + 1
            rows.setdefault(name, []).append(run.rows)
    for name in names[1:]:
        diff = bc.MaskDiff()
        for c, a, b in zip(cases, rows["constrain"], rows[name]):
            bc.compare_rows(a, b, vocab, diff, c.id)
        with capsys.disabled():  # reported, not asserted: the engines read some keywords differently
            sys.stdout.write(
                f"\n{name} vs constrain: {diff.differing_steps}/{diff.steps} steps differ; {diff.first[:2]}\n"
            )


def test_worker_pipeline_and_reports(cases: list[mbs.StepCase], vocab: bc.Vocab) -> None:
    two = cases[:2]
    runs, notes = mbs.run_bench(
        two, ["constrain"], tokenizer_path("llama3-128k"), jobs=1, progress=False, compile_timeout_s=60
    )
    assert set(runs) == {"constrain"}, notes
    for c, r in zip(two, runs["constrain"]):
        assert r.status == "ok", (c.id, r.detail)
        assert len(r.fill_us) == len(c.tokens) + 1 == len(r.digests) == len(r.states) == len(r.fill_cpu_us)
        assert r.ttfm_ms >= r.compile_ms > 0 and r.ttfm_cpu_ms > 0
    summary = mbs.summarize(runs)
    assert summary["constrain"]["counts"]["ok"] == 2
    assert summary["constrain"]["fill_us"]["n"] == sum(len(c.tokens) for c in two)  # step 0 excluded
    worst = mbs.worst_steps(two, runs["constrain"], vocab.token_bytes)
    assert [s["schema"] for s in worst["schemas"]] == [c.id for c in two]
    for s in worst["schemas"]:
        assert all(w["step"] >= 1 and w["automaton"] for w in s["worst"])
    meta = {"schemas": 2, "subsets": 2, "tokens": 0, "tokenizer": "t", "cpus": "1", "compile_timeout_s": 10.0}
    md = mbs.format_markdown(summary, mbs.summarize(runs, [0, 1]), 2, {}, meta)
    assert "| constrain" in md and "p99" in md


def test_cli_route() -> None:
    from constrain.cli import build_parser

    args = build_parser().parse_args(["bench", "maskbench-steps", "--limit", "5", "--engines", "constrain"])
    assert args.func is mbs.run_from_args and args.limit == 5
