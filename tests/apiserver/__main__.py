"""Run the fake API server in the foreground: `python -m tests.apiserver --bundle DIR ...`.

For benchmarks and manual poking with kubectl; it prints the URL, then serves until SIGTERM
or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .faults import parse_fault_spec
from .server import ApiServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.apiserver", description=__doc__)
    parser.add_argument("--bundle", help="bundle directory (or its cluster/ directory)")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--plain-http", action="store_true", help="serve HTTP instead of HTTPS")
    parser.add_argument("--token", default="kdoctor-test-token", help="bearer token to accept")
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    parser.add_argument("--context", default="test", help="kubeconfig context/cluster/user name")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="fault rule, e.g. status=403,verb=list,resource=pods | delay=2 | hang | "
        "truncate,path=^/api/v1/pods (repeatable; path= goes last)",
    )
    parser.add_argument(
        "--pod-start-delay",
        type=float,
        default=0.0,
        help="seconds a recreated pod stays Pending before it runs",
    )
    parser.add_argument(
        "--lenient", action="store_true", help="skip unparseable bundle files instead of failing"
    )
    args = parser.parse_args(argv)

    server = ApiServer(
        args.bundle,
        tls=not args.plain_http,
        token=None if args.no_auth else args.token,
        port=args.port,
        strict=not args.lenient,
        pod_start_delay=args.pod_start_delay,
    )
    for spec in args.fault:
        server.faults.add(parse_fault_spec(spec))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with server:
        server.write_kubeconfig(args.kubeconfig, args.context)
        print(server.url, flush=True)
        for problem in server.load_errors:
            print(f"skipped: {problem}", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
