"""`python -m vi_lab`: the same command as `vi-lab` and `python -m vi_lab.cli`."""

from vi_lab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
