"""``python -m assistantd`` (and the ``assistantd`` command) runs the daemon in the
foreground."""


def run() -> None:
    # Before the daemon's imports: the TLS trust loads meanwhile, off the GIL (tls.py).
    from assistantd import tls

    tls.preload()
    from assistantd.daemon import main

    main()


if __name__ == "__main__":
    run()
