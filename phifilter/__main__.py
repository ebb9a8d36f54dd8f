import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the interpreter loads the command line: no traceback
    sys.stderr.write("Interrupted.\n")
    sys.exit(130)

main()
