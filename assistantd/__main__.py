"""``python -m assistantd`` runs the daemon in the foreground."""

from assistantd.daemon import main

main()
