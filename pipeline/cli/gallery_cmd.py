"""`facetrail gallery ...` (enroll, list, show, remove, rename, export, import, snapshot) and `facetrail identify`.

Stable outputs (scripts rely on them):
  gallery list --json   one object per identity per line: {"id", "name", "templates", "created", "metadata"}
  gallery show --json   one object: the list fields plus "template_list": [{"id", "sha256", "quality", "created",
                        "thumbnail_bytes"}]
  identify --json       one object per image per line:
                        {"image": path, "faces": [{"box": [x, y, w, h], "identity": name|null, "score": float,
                         "runner_up": name|null, "runner_up_score": float}]}
                        or {"image": path, "error": reason} for an image that cannot be read (exit code 1).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from . import UserError
from .common import print_json, settings_from


def register(sub) -> None:
    g = sub.add_parser("gallery", help="manage enrolled people (the FAISS gallery kept in Redis)")
    gs = g.add_subparsers(dest="gallery_cmd", metavar="SUBCOMMAND")
    gs.required = True

    p = gs.add_parser("enroll", help="enroll NAME from one or more photos (adds to NAME if it exists)")
    p.add_argument("name")
    p.add_argument("images", nargs="+", metavar="IMG")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--face", type=int, metavar="N", help="which face when a photo has several (0 = largest)")
    sel.add_argument("--largest", action="store_true", help="take the largest face when a photo has several")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="also enroll the mirrored face (default: gallery.flip_augment)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata (repeatable)")
    p.add_argument("--skip-bad", action="store_true",
                   help="enroll the usable photos even if some are refused (default: refuse all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_enroll)

    p = gs.add_parser("list", help="enrolled people")
    p.add_argument("--json", action="store_true", help="one JSON object per person per line")
    p.set_defaults(func=cmd_list)

    p = gs.add_parser("show", help="one person and their templates")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = gs.add_parser("remove", help="forget a person completely (templates, vectors, thumbnails, events)")
    p.add_argument("name")
    p.set_defaults(func=cmd_remove)

    p = gs.add_parser("rename", help="rename a person (their id stays)")
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(func=cmd_rename)

    p = gs.add_parser("export", help="write every person and template (embeddings + thumbnails) to a JSON file")
    p.add_argument("file", help="output file ('-' for stdout)")
    p.set_defaults(func=cmd_export)

    p = gs.add_parser("import", help="merge a gallery export into this gallery")
    p.add_argument("file")
    p.set_defaults(func=cmd_import)

    p = gs.add_parser("snapshot", help="write a gallery snapshot now and trim the change log")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("identify", help="who is in these photos (1:K against the gallery, open set)")
    p.add_argument("images", nargs="+", metavar="IMG")
    p.add_argument("--json", action="store_true", help="one JSON object per image per line")
    p.set_defaults(func=cmd_identify)


# ---- helpers -------------------------------------------------------------------------------------------------
def _open(args):
    from pipeline.backbone import connect
    from index.store import GalleryStore

    settings = settings_from(args)
    r = connect(settings)
    return settings, r, GalleryStore(r, settings)


def _gallery_errors():
    from index.enroll import EnrollError
    from index.store import GalleryError
    from pipeline.engine.imageio import ImageError

    return (EnrollError, GalleryError, ImageError)


def _after_change(r, settings) -> None:
    from index.replica import GalleryReplica
    from index.store import GalleryStore

    if GalleryStore(r, settings).changes_since_snapshot() >= settings.gallery.snapshot_every:
        GalleryReplica(r, settings).snapshot()


def _ident_obj(i) -> dict:
    return {"id": i.id, "name": i.name, "templates": i.templates, "created": i.created, "metadata": i.metadata}


# ---- gallery -------------------------------------------------------------------------------------------------
def cmd_enroll(args) -> int:
    from index.enroll import FaceChoice, templates_from_image
    from pipeline.engine.engine import FaceEngine
    from pipeline.engine.imageio import decode_image

    errors = _gallery_errors()
    meta = {}
    for kv in args.meta:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UserError(f"--meta {kv!r}: expected KEY=VALUE")
        meta[k] = v
    settings, r, store = _open(args)
    from index.store import valid_name

    try:
        name = valid_name(args.name)
    except errors as e:
        raise UserError(str(e)) from None
    engine = FaceEngine(settings)
    choice = FaceChoice(index=args.face, largest=args.largest)
    templates, problems, used = [], [], 0
    for path in args.images:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            problems.append(f"{path}: cannot read ({e.strerror or e})")
            continue
        try:
            img = decode_image(data, name=path)
            templates += templates_from_image(engine, img, settings, name=path, choice=choice, flip=args.flip,
                                              sha256=hashlib.sha256(data).hexdigest())
            used += 1
        except errors as e:
            problems.append(str(e))
    for p in problems:
        print(f"refused: {p}", file=sys.stderr)
    if problems and (not args.skip_bad or not templates):
        raise UserError(f"nothing enrolled: {len(problems)} of {len(args.images)} photo(s) refused"
                        + ("" if args.skip_bad else " (--skip-bad enrolls the others)"))
    try:
        iid, added = store.enroll(name, templates, metadata=meta)
    except errors as e:
        raise UserError(str(e)) from None
    total = len(store.template_ids(iid))
    _after_change(r, settings)
    if args.json:
        print_json({"id": iid, "name": name, "added": len(added), "templates": total, "images": used,
                    "refused": problems})
    else:
        print(f"enrolled {name} ({iid}): {len(added)} template(s) added from {used} photo(s), {total} in all")
    return 1 if problems else 0


def cmd_list(args) -> int:
    _, _, store = _open(args)
    idents = store.identities()
    if args.json:
        for i in idents:
            print_json(_ident_obj(i))
        return 0
    if not idents:
        print("(gallery is empty)")
        return 0
    w = max(4, *(len(i.name) for i in idents))
    print(f"{'NAME':<{w}}  {'ID':<16}  {'TEMPLATES':>9}  CREATED")
    for i in idents:
        print(f"{i.name:<{w}}  {i.id:<16}  {i.templates:>9}  {i.created}")
    return 0


def cmd_show(args) -> int:
    _, _, store = _open(args)
    iid = store.resolve(args.name)
    ident = store.identity(iid) if iid else None
    if ident is None:
        raise UserError(f"no such person in the gallery: {args.name!r}")
    tpls = store.templates(iid)
    rows = [{"id": t.id, "sha256": t.sha256, "quality": round(t.quality, 4), "created": t.created,
             "thumbnail_bytes": len(t.thumbnail)} for t in tpls]
    if args.json:
        print_json({**_ident_obj(ident), "template_list": rows})
        return 0
    print(f"name:      {ident.name}\nid:        {ident.id}\ncreated:   {ident.created}\n"
          f"metadata:  {json.dumps(ident.metadata, sort_keys=True)}\ntemplates: {ident.templates}")
    for row in rows:
        print(f"  template {row['id']}: image sha256 {row['sha256'][:16]}  quality {row['quality']:.2f}  "
              f"thumbnail {row['thumbnail_bytes']} bytes  created {row['created']}")
    return 0


def cmd_remove(args) -> int:
    from index.hooks import HookError

    settings, r, store = _open(args)
    try:
        iid, name, tids = store.remove(args.name)
    except HookError as e:
        _after_change(r, settings)
        raise UserError(str(e)) from None
    except _gallery_errors() as e:
        raise UserError(str(e)) from None
    _after_change(r, settings)
    print(f"removed {name} ({iid}): {len(tids)} template(s)")
    return 0


def cmd_rename(args) -> int:
    settings, r, store = _open(args)
    try:
        iid = store.rename(args.old, args.new)
    except _gallery_errors() as e:
        raise UserError(str(e)) from None
    _after_change(r, settings)
    print(f"renamed {args.old} -> {args.new.strip()} ({iid})")
    return 0


def cmd_export(args) -> int:
    _, _, store = _open(args)
    data = store.export()
    text = json.dumps(data, separators=(",", ":"))
    n_t = sum(len(i["templates"]) for i in data["identities"])
    if args.file == "-":
        sys.stdout.write(text + "\n")
        return 0
    out = Path(args.file)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(out)
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    print(f"exported {len(data['identities'])} person(s), {n_t} template(s) to {out}")
    return 0


def cmd_import(args) -> int:
    settings, r, store = _open(args)
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{args.file}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UserError(f"{args.file}: not JSON ({e})") from None
    try:
        done = store.import_(data)
    except _gallery_errors() as e:
        raise UserError(f"{args.file}: {e}") from None
    _after_change(r, settings)
    for name, n in done:
        print(f"imported {name}: {n} template(s) added")
    print(f"imported {len(done)} person(s), {sum(n for _, n in done)} new template(s)")
    return 0


def cmd_snapshot(args) -> int:
    from index.replica import GalleryReplica

    settings, r, _ = _open(args)
    rep = GalleryReplica(r, settings)
    wrote = rep.snapshot()
    print(f"snapshot at log id {rep.last_id}: {len(rep)} template(s), {len(rep.names)} person(s)"
          if wrote else "nothing to snapshot (no changes since the current snapshot)")
    return 0


# ---- identify ------------------------------------------------------------------------------------------------
def cmd_identify(args) -> int:
    from index.replica import GalleryReplica
    from pipeline.engine.engine import FaceEngine
    from pipeline.engine.imageio import ImageError, load_image
    from pipeline.identify import identify_image

    settings, r, _ = _open(args)
    engine = FaceEngine(settings)
    replica = GalleryReplica(r, settings).start()
    failed = 0
    for path in args.images:
        try:
            img = load_image(path)
        except ImageError as e:
            failed += 1
            if args.json:
                print_json({"image": path, "error": str(e)})
            else:
                print(f"{path}: error: {e}")
            continue
        faces = identify_image(engine, replica, img)
        if args.json:
            print_json({"image": path, "faces": faces})
            continue
        if not faces:
            print(f"{path}: no face")
        for f in faces:
            who = f["identity"] or "unknown"
            ru = f" (runner-up {f['runner_up']} {f['runner_up_score']:.2f})" if f["runner_up"] else ""
            print(f"{path}: {who} {f['score']:.2f}{ru} box {f['box']}")
    return 1 if failed else 0
