"""python -m orbit_fast -> the CLI."""

from orbit_fast.cli import main

if __name__ == "__main__":
    main()
