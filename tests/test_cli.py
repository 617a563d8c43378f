"""The `soundlm` command: every subcommand answers --help, bad commands exit 2."""
import pytest

from soundlm import cli


@pytest.mark.parametrize("argv", [
    ["train"], ["tokenize"], ["generate"], ["decode"], ["quickstart"], ["compile"],
    *[["bench", name] for name in cli.BENCHMARKS],
])
def test_every_subcommand_has_help(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main([*argv, "--help"])
  assert exit_info.value.code == 0
  assert "usage:" in capsys.readouterr().out


def test_top_level_usage_lists_the_subcommands(capsys):
  assert cli.main(["--help"]) == 0
  out = capsys.readouterr().out
  for name in (*cli.SUBCOMMANDS, "bench"):
    assert name in out


@pytest.mark.parametrize("argv", [[], ["fly"], ["bench"], ["bench", "nothing"]])
def test_unknown_or_missing_commands_exit_2(argv, capsys):
  assert cli.main(argv) == 2
  captured = capsys.readouterr()
  assert "usage" in captured.out + captured.err
