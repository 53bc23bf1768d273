"""Names become file names only through ``evalkit.paths`` (safe_name / inside): a spec,
command-line or user name can never write or read outside the folders it was given."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalkit.benchmarks import Row, available, load_benchmark, load_spec
from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.paths import inside, safe_name
from evalkit.report import write_report
from evalkit.results import ResultStore
from evalkit.runner import RunOptions, run_benchmark

from conftest import TINY_TOML

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
REPO = Path(__file__).resolve().parent.parent


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def failed_cleanly(result, *needles):
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert isinstance(result.exception, SystemExit)
    out = result.output.strip()
    assert "Traceback" not in out and "\n" not in out, out  # one line
    assert out.startswith("error: "), out
    for n in needles:
        assert n in out, (n, out)
    return out


def _escaping_spec(text: str, field: str) -> str:
    """TINY_TOML with one name / id replaced by ``text``."""
    if field == "name":
        return TINY_TOML.replace('name = "tiny"', f'name = "{text}"', 1)
    if field == "row":
        return TINY_TOML.replace('id = "gan"', f'id = "{text}"', 1)
    return (TINY_TOML.replace('id = "digits"', f'id = "{text}"', 1).replace('default_columns = ["digits"]', f'default_columns = ["{text}"]')
            .replace("published = { digits = ", f'published = {{ "{text}" = '))


# ----------------------------------------------------------------------------- spec names and ids
@pytest.mark.parametrize("supplied", ["path", "name"])
@pytest.mark.parametrize("field,bad", [("name", "../../../escaped"), ("row", "../../escaped"), ("column", "a/../../escaped"),
                                       ("name", "/tmp/escaped"), ("row", "user:x"), ("name", ".escaped")])
def test_escaping_spec_is_refused_before_anything_is_written(tmp_path, monkeypatch, supplied, field, bad):
    deep = tmp_path / "w" / "x" / "y"
    specs = deep / "benchmarks"
    specs.mkdir(parents=True)
    (specs / "esc.toml").write_text(_escaping_spec(bad, field))
    if supplied == "name":
        monkeypatch.setenv("EVALKIT_BENCHMARKS", str(specs))
        spec_arg = "esc"
    else:
        spec_arg = specs / "esc.toml"
    with pytest.raises(EvalkitError, match=re.escape(repr(bad))):
        load_spec(str(spec_arg))
    out = failed_cleanly(cli("run", spec_arg, "--epochs", 1, "--rows", "gan" if field != "row" else bad,
                             "--results-dir", deep / "results", "--reports-dir", deep / "reports", "--cache-dir", deep / "cache",
                             "--no-progress"),
                         repr(bad), "letters, digits, '.', '_' and '-' (not starting with '.'", "esc.toml")
    assert field in out or "id" in out
    # nothing was trained, recorded or reported, here or anywhere above the chosen folders
    for d in ("results", "reports", "cache"):
        assert not (deep / d).exists()
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p != specs / "esc.toml")
    assert written == [], written
    assert not list(Path("/tmp").glob("escaped*"))


def test_report_of_a_path_like_name_is_refused(tmp_path, monkeypatch):
    specs = tmp_path / "a" / "b" / "benchmarks"
    specs.mkdir(parents=True)
    (specs / "tiny.toml").write_text(TINY_TOML)
    evil = tmp_path / "a" / "x" / "evil.toml"  # benchmarks/../../x/evil.toml
    evil.parent.mkdir(parents=True)
    evil.write_text(TINY_TOML.replace('name = "tiny"', 'name = "evil"', 1))
    monkeypatch.setenv("EVALKIT_BENCHMARKS", str(specs))
    for name in ("../../x/evil", "../b/benchmarks/tiny", "/etc/passwd", ".tiny", "tiny/", "x\\..\\tiny"):
        failed_cleanly(cli("report", name, "--stdout", "--results-dir", tmp_path / "r"), repr(name), "known: tiny")
        with pytest.raises(EvalkitError, match="known: tiny"):
            load_spec(name)
    assert load_spec("tiny").name == "tiny"  # a bare name still works
    assert not (tmp_path / "r").exists()


def test_suite_parts_and_name_must_be_bare_names(tmp_path, monkeypatch):
    specs = tmp_path / "s" / "benchmarks"
    specs.mkdir(parents=True)
    (specs / "tiny.toml").write_text(TINY_TOML)
    (tmp_path / "s" / "evil.toml").write_text(TINY_TOML.replace('name = "tiny"', 'name = "evil"', 1))
    monkeypatch.setenv("EVALKIT_BENCHMARKS", str(specs))
    (specs / "sneaky.toml").write_text('name = "sneaky"\ntitle = "t"\nparts = ["tiny", "../evil"]\n')
    with pytest.raises(EvalkitError, match=re.escape("part '../evil'")):
        load_spec("sneaky")
    (specs / "badname.toml").write_text('name = "../up"\ntitle = "t"\nparts = ["tiny"]\n')
    with pytest.raises(EvalkitError, match="suite name '../up'"):
        load_spec("badname")


def test_shipped_specs_keep_their_names_and_committed_figures_their_file_names():
    names = available()
    assert names, "no benchmarks found"
    for name in names:
        spec = load_spec(name)
        assert spec.name == name
        for b in getattr(spec, "parts", [spec]):
            for x in [b.name, *(c.id for c in b.columns), *(r.id for r in b.rows)]:
                assert safe_name(x, what="id", sanitise=True) == x
    for md in (REPO / "reports").glob("*.md"):
        for fig in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text()):
            assert SAFE.match(fig), (md.name, fig)
            assert safe_name(fig, what="figure", sanitise=True) == fig


# ----------------------------------------------------------------------------- user rows
def test_user_row_files_have_portable_names(tmp_path, user_pkg):
    spec = tmp_path / "specs" / "tiny.toml"
    spec.parent.mkdir(parents=True)
    spec.write_text(TINY_TOML.replace("n_samples = 500", "n_samples = 300", 1))
    bench = load_benchmark(str(spec))
    rid = f"user:{user_pkg}:build"
    bench.rows.append(Row(id=rid, label="My model: v2", model=f"{user_pkg}:build", user=True))
    results, reports = tmp_path / "results", tmp_path / "reports"
    run_benchmark(bench, [rid], None, RunOptions(results_dir=results, cache_dir=tmp_path / "cache", progress=False), log=lambda s: None)
    recs = ResultStore(results).records("tiny")
    assert [r["row"] for r in recs] == [rid]  # the record keeps the row id
    previews = [p for p in (results / "tiny").iterdir()]
    assert previews, "the parzen cell saves its samples beside the store"
    for p in previews:
        assert SAFE.match(p.name) and ":" not in p.name, p.name
    written = write_report(bench, ResultStore(results), reports)
    figs = [k for k in written if k not in ("md", "tex")]
    assert figs, written
    for name in figs:
        assert SAFE.match(name) and ":" not in name, name
        assert written[name].parent == reports and written[name].exists()
    assert {p.name for p in reports.iterdir()} == {"tiny.md", "tiny.tex", *figs}
    md = written["md"].read_text()
    for name in figs:
        assert f"]({name})" in md
    assert all(p.is_relative_to(tmp_path) for p in tmp_path.rglob("*"))


# ----------------------------------------------------------------------------- the two functions
def test_safe_name_validates():
    for ok in ("parzen", "emotion-ckplus48", "aae-2d-20", "v1.2_x", "a..b"):
        assert safe_name(ok, what="id") == ok
    for bad in ("../x", "a/b", "a\\b", "/abs", ".hidden", "..", ".", "", "user:x", "a b", "é", "x\0y", "x" * 101):
        with pytest.raises(EvalkitError) as e:
            safe_name(bad, what="spec.toml: row id", known=["a", "b"])
        msg = str(e.value)
        assert msg.startswith(f"spec.toml: row id {bad!r}") and "letters, digits, '.', '_' and '-' (not starting with '.'" in msg and "known: a, b" in msg
        assert "\n" not in msg


def test_sanitiser_is_deterministic_safe_and_collision_free():
    texts = ["user:mypkg.mod:build", "user:mypkg.mod/build", "user mypkg.mod build", "user:mypkg.mod::build",
             "user-mypkg.mod-build", "../../etc/passwd", "..", ".", "", ":", "::", "a:b", "a/b", "a b", "é", "e",
             "x" * 500, "x" * 501, "C:\\Windows\\x", "-leading", "trailing.", "user:My model"]
    out = [safe_name(t, what="label", sanitise=True) for t in texts]
    assert out == [safe_name(t, what="label", sanitise=True) for t in texts]  # deterministic
    assert len(set(out)) == len(texts), "different texts, different names"
    for t, s in zip(texts, out):
        assert SAFE.match(s) and not s.startswith("."), (t, s)
        assert len(s) <= 100, s
    assert out[0].startswith("user-mypkg.mod-build-")  # readable
    assert safe_name("user-mypkg.mod-build", what="x", sanitise=True) == "user-mypkg.mod-build"  # safe text unchanged


def test_inside_refuses_escapes(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert inside(root, "a.png") == root / "a.png"
    assert inside(tmp_path / "not-yet", "x.jsonl") == tmp_path / "not-yet" / "x.jsonl"
    for bad in ("../x.png", "a/../../x", "..", ".", "", str(tmp_path / "abs.png"), "/etc/passwd"):
        with pytest.raises(EvalkitError):
            inside(root, bad)
    (root / "link").symlink_to(tmp_path)  # a link out of the folder
    with pytest.raises(EvalkitError, match="outside"):
        inside(root, "link")
    with pytest.raises(EvalkitError):
        ResultStore(root).path("../escaped")
