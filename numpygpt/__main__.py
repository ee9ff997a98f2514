import sys

try:  # a Ctrl-C while the command line itself is still importing: one line, exit 130
    from .cli import main
except KeyboardInterrupt:
    sys.stderr.write("numpygpt: interrupted\n")
    sys.exit(130)

sys.exit(main())
