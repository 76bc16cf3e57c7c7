"""`python -m pgnumpy.sweep` (pgnumpy/sweep/__init__.py says what it does)."""

from pgnumpy import cli

cli.guard_startup()  # Ctrl-C while numpy, numba, gymnasium and Ray load: one line

from pgnumpy.sweep.command import main  # noqa: E402

cli.exit_now(main())  # no interpreter teardown after Ray's: its threads crashed it (issue 22)
