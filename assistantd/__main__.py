"""``python -m assistantd`` (and the ``assistantd`` command) runs the daemon in the
foreground."""

import os


def run() -> None:
    # Before any import builds a validator: pydantic plugins (found by scanning every
    # installed package's entry points, 10-15 ms of a cold start) would see every value
    # the daemon validates, API keys included; the daemon uses none, so none is loaded.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # Before the daemon's imports: the TLS trust loads meanwhile, off the GIL (tls.py).
    from assistantd import tls

    tls.preload()
    from assistantd.daemon import main

    main()


if __name__ == "__main__":
    run()
