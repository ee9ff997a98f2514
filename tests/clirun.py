"""Running the command line in-process, for the CLI tests."""

from numpygpt.cli import main


def run(argv, capsys):
    """main(argv) -> (exit code, stdout, stderr); argparse errors exit through SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
