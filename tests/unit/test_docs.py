"""The README's promises that code can check: every variable documented with its real default."""

from pathlib import Path

from lb.config import documented_variables
from lb.routing.labels import documented_labels

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_variable_is_in_the_readme_table_with_its_default():
    for name, default, _ in documented_variables():
        shown = f"`{default}`" if default else "(empty)"
        assert f"| `{name}` | {shown} |" in README, name


def test_the_quick_start_has_the_two_commands_and_ci_calls_the_test_one():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
    ci = (Path(__file__).resolve().parents[2] / ".ci/run").read_text()
    assert "\nmake test\n" in ci


def test_every_service_label_is_in_the_readme_labels_table():
    for label, doc in documented_labels():
        assert f"| `{label}` | {doc} |" in README, label


def test_every_scaling_setting_is_in_the_readme_the_stack_file_and_the_config():
    # The one list (policies/settings.py) against what a user reads and deploys.
    import dataclasses

    from lb.config import Config
    from policies.settings import SETTINGS

    stack = (Path(__file__).resolve().parents[2] / "deploy/stack.yml").read_text()
    fields = {f.name: f.metadata["env"] for f in dataclasses.fields(Config)}
    for s in SETTINGS:
        shown = f"`{s.default}`" if s.default else "(empty)"
        assert f"| `{s.env}` | {shown} | {s.help} |" in README, s.env
        assert f"\n      {s.env}: ${{{s.env}:-{s.default}}}\n" in stack, s.env
        assert fields.get(s.name) == s.env, s.name
