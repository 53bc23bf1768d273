"""``--model`` on the command line: a name or factory without ``--checkpoint`` is refused unless
``--random-init`` is given (``evalkit run`` and ``evalkit eval``), and a ``module:factory`` spec
finds ``./module.py`` in the current folder without ``PYTHONPATH``."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
import torch

from evalkit.results import ResultStore
from helpers import USER_MODULE, cli, failed_cleanly, run_args

EVAL = ["eval", "parzen", "--dataset", "digits", "--n-samples", 100, "--valid-limit", 50, "--json"]


def _ok(r):
    assert r.exit_code == 0, f"exit {r.exit_code}\n{r.output}\n{r.exception!r}"
    return r


@pytest.mark.parametrize("spec", ["gan", "FACTORY"])
def test_eval_refuses_a_model_without_weights_unless_random_init(user_pkg, spec):
    spec = f"{user_pkg}:build" if spec == "FACTORY" else spec
    failed_cleanly(cli(*EVAL, "--model", spec), f"--model {spec} without --checkpoint", "--random-init")
    if spec == "gan":  # the reference GAN is built for 28x28: past the refusal, the protocol's own check speaks
        failed_cleanly(cli(*EVAL, "--model", spec, "--random-init"), "expected [n, 1, 8, 8]")
        return
    out = json.loads(_ok(cli(*EVAL, "--model", spec, "--random-init")).stdout)
    assert out["model"] == spec and out["checkpoint"] is None and out["details"]["n_samples"] == 100


def test_random_init_beside_a_checkpoint_or_a_model_file_is_refused(user_pkg, tmp_path):
    ck = tmp_path / "w.pt"
    torch.save({}, ck)
    failed_cleanly(cli(*EVAL, "--model", f"{user_pkg}:build", "--checkpoint", ck, "--random-init"), "exclude each other")
    failed_cleanly(cli(*EVAL, "--model", ck, "--random-init"), "holds its own weights")


def test_run_refuses_a_user_row_without_weights_unless_random_init(tiny_toml, dirs, user_pkg):
    spec = f"{user_pkg}:build"
    failed_cleanly(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--model", spec)),
                   f"--model {spec} without --checkpoint", "--random-init")
    assert not ResultStore(dirs["results"]).records("tiny"), "nothing may run before the refusal"
    failed_cleanly(cli(*run_args(tiny_toml, dirs, "--model", "gan")), "--model gan without --checkpoint")
    r = cli(*run_args(tiny_toml, dirs, "--random-init"))
    assert r.exit_code == 2 and "--random-init goes with --model" in r.output
    _ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "gan", "--model", spec, "--random-init", "--no-report")))
    assert {x["row"] for x in ResultStore(dirs["results"]).records("tiny")} == {"gan", f"user:{spec}"}


def test_rows_user_selects_the_model_row_alone(tiny_toml, dirs, user_pkg):
    spec = f"{user_pkg}:build"
    _ok(cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "user", "--model", spec, "--random-init", "--no-report")))
    assert [x["row"] for x in ResultStore(dirs["results"]).records("tiny")] == [f"user:{spec}"]  # no reference row ran
    r = cli(*run_args(tiny_toml, dirs, "--epochs", 1, "--rows", "user", "--no-report"))  # without --model: an unknown row
    assert r.exit_code != 0 and "user" in r.output


def test_factory_module_in_the_current_folder_needs_no_pythonpath(tmp_path, monkeypatch):
    """As from the console script: the import path holds neither '' nor the current folder."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "my_local_models_i15.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != str(work)])
    monkeypatch.delitem(sys.modules, "my_local_models_i15", raising=False)
    out = json.loads(_ok(cli(*EVAL, "--model", "my_local_models_i15:build", "--random-init")).stdout)
    assert out["model"] == "my_local_models_i15:build"
    assert sys.path[0] == str(work)
    sys.modules.pop("my_local_models_i15", None)


def test_git_commit_of_a_package_installed_inside_another_repository(tmp_path):
    """A package lying untracked in someone's git repository (an installed evalkit in a project's
    .venv) records no commit; a tracked one records the repository's commit."""
    import subprocess

    from reference_models.training import git_commit

    repo = tmp_path / "project"
    pkg = repo / ".venv" / "site-packages" / "reference_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (repo / "app.py").write_text("x = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "app.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    assert git_commit(pkg) is None
    subprocess.run([*git, "add", "-f", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "y"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(pkg) == head


def test_sample_quality_and_compare_refuse_a_model_without_weights_unless_random_init(tmp_path):
    import numpy as np

    failed_cleanly(cli("eval", "sample-quality", "--model", "gan", "--dataset", "digits", "--no-progress"),
                   "--model gan without --checkpoint", "--random-init")
    real = tmp_path / "real.npy"
    np.save(real, np.zeros((20, 1, 8, 8), dtype=np.float32))
    failed_cleanly(cli("compare", "gan", str(real), "--no-progress"), "without --checkpoint", "--random-init")


def test_every_eval_command_has_threads_no_progress_and_help_on_every_option():
    from evalkit.cli_eval import eval_group

    for name, cmd in eval_group.commands.items():
        opts = {o.name: o for o in cmd.params if isinstance(o, __import__("click").Option)}
        assert {"threads", "no_progress"} <= set(opts), f"eval {name} lacks --threads / --no-progress"
        missing = [n for n, o in opts.items() if not o.help]
        assert not missing, f"eval {name}: options without help text: {missing}"



def test_a_user_row_goes_to_its_own_folders_by_default(tiny_toml, dirs, user_pkg, tmp_path, monkeypatch):
    """Without --results-dir the committed store is left as it is: the user's row is recorded in
    results/user/, the reference rows are read from results/, the report goes to reports/user/."""
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    base = ["run", str(tiny_toml), "--cache-dir", dirs["cache"], "--no-progress", "--epochs", 1]
    _ok(cli(*base, "--rows", "gan"))  # a reference row, recorded in ./results as usual
    before = (work / "results" / "tiny.jsonl").read_text()
    spec = f"{user_pkg}:build"
    r = _ok(cli(*base, "--model", spec, "--random-init", "--label", "mine"))
    assert (work / "results" / "tiny.jsonl").read_text() == before  # nothing appended to the reference store
    assert [x["row"] for x in ResultStore(work / "results" / "user").records("tiny")] == [f"user:{spec}"]  # only the user row ran
    md = (work / "reports" / "user" / "tiny.md").read_text()
    gan = ResultStore(work / "results").records("tiny")[0]
    assert "| mine |" in md and f"{gan['value']:.1f}" in md  # the reference row beside the user's
    assert "results/user/" in r.output
