"""`python -m control_plane.cli`: the `conch` command without the console script."""

from control_plane.cli import main

main()
