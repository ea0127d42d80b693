"""`facetrail demo`: a self-contained run of the whole pipeline on a clip, in its own data dir
(see pipeline/demo.py for the two scenarios)."""
from __future__ import annotations

from .common import print_json, settings_from


def register(sub) -> None:
    p = sub.add_parser("demo", help="enroll people, run a clip through the pipeline, print the events "
                                    "(own data dir; your gallery is untouched)")
    p.add_argument("--synthetic", action="store_true",
                   help="use the public-domain astronaut scene even when ../shared/data is present")
    p.add_argument("--keep", action="store_true", help="keep the previous demo's gallery and events")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object at the end")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    import sys

    from ..demo import DemoError, run_demo
    from . import UserError

    settings = settings_from(args)  # only for the models dir
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    try:
        res = run_demo(settings.models.dir, synthetic=args.synthetic, keep=args.keep, say=say)
    except DemoError as e:
        raise UserError(str(e)) from None
    if args.json:
        print_json(res)
    return 1 if res["missing"] else 0
