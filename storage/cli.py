"""Command line for the storage layer: works the same on a local folder and on a bucket."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.settings import SettingsError, load_environment
from storage import keys
from storage.areas import open_areas, open_store
from storage.base import StorageError, Store, upload_folder
from storage.config import StorageSettings
from storage.local import LocalStore
from storage.s3 import S3Store

__all__ = ["copy_folder_in", "copy_folder_out", "create_hierarchy", "main"]

_AREAS = (
    keys.DATA_AREA,
    keys.DB_AREA,
    keys.AUTH_AREA,
    keys.MODEL_AREA,
    keys.LEARNING_AREA,
    keys.INFERENCE_AREA,
    keys.GRAD_CAM_AREA,
)


def create_hierarchy(store: Store, *, create_bucket: bool = True) -> list[str]:
    """Make the store ready: the bucket (where allowed) or the folders of every area."""
    done = []
    if isinstance(store, S3Store):
        if create_bucket and store.create_bucket():
            done.append(f"created bucket {store.bucket}")
        # S3 has no folders: areas exist as soon as they hold an object.
    elif isinstance(store, LocalStore):
        for area in _AREAS:
            folder = store.root.joinpath(*area.strip("/").split("/"))
            if not folder.exists():
                folder.mkdir(parents=True)
                done.append(f"created {folder}")
    return done


# Upload every file below a folder to a prefix + its relative path; returns the count.
copy_folder_in = upload_folder


def copy_folder_out(store: Store, prefix: str, folder: Path) -> int:
    """Download every object under `prefix` into `folder`, keeping relative paths."""
    count = 0
    for info in store.list(prefix):
        relative = info.key[len(prefix) :].lstrip("/")
        target = folder.joinpath(*relative.split("/"))
        if folder.resolve() not in target.resolve().parents:
            continue  # cannot happen with validated keys; never write outside `folder`
        store.download_file(info.key, target)
        count += 1
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xray-storage", description=__doc__)
    parser.add_argument(
        "--url", help="store URL (directory, file:// or s3://); default: STORAGE_URL"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the bucket (where allowed) and the hierarchy")
    commands.add_parser("areas", help="print where each area lives")
    listing = commands.add_parser("ls", help="list keys under a prefix")
    listing.add_argument("prefix", nargs="?", default="")
    listing.add_argument("--start-after", default=None)
    listing.add_argument("--limit", type=int, default=None)
    listing.add_argument("-l", "--long", action="store_true", help="also size and version tag")
    upload = commands.add_parser("upload", help="copy a local folder into the store")
    upload.add_argument("folder", type=Path)
    upload.add_argument("prefix")
    download = commands.add_parser("download", help="copy a prefix of the store to a folder")
    download.add_argument("prefix")
    download.add_argument("folder", type=Path)
    cat = commands.add_parser("cat", help="write one object to standard output")
    cat.add_argument("key")
    remove = commands.add_parser("rm", help="delete one object, or a prefix with -r")
    remove.add_argument("key")
    remove.add_argument("-r", "--recursive", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = StorageSettings.from_env(load_environment())
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    store = open_store(arguments.url or settings.url, settings)
    try:
        return _run(arguments, store, settings)
    except (StorageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _run(arguments: argparse.Namespace, store: Store, settings: StorageSettings) -> int:
    if arguments.command == "init":
        for line in create_hierarchy(store) or [f"{store.describe()} is ready"]:
            print(line)
    elif arguments.command == "areas":
        for area, where in open_areas(settings).describe().items():
            print(f"{area}\t{where}")
    elif arguments.command == "ls":
        for count, info in enumerate(
            store.list(arguments.prefix, start_after=arguments.start_after)
        ):
            if arguments.limit is not None and count >= arguments.limit:
                break
            print(f"{info.size:>12}  {info.etag}  {info.key}" if arguments.long else info.key)
    elif arguments.command == "upload":
        if not arguments.folder.is_dir():
            print(f"error: {arguments.folder} is not a folder", file=sys.stderr)
            return 1
        print(f"uploaded {copy_folder_in(store, arguments.folder, arguments.prefix)} files")
    elif arguments.command == "download":
        print(f"downloaded {copy_folder_out(store, arguments.prefix, arguments.folder)} files")
    elif arguments.command == "cat":
        sys.stdout.buffer.write(store.get_bytes(arguments.key))
    elif arguments.command == "rm":
        if arguments.recursive:
            print(f"deleted {store.delete_prefix(arguments.key)}")
        else:
            store.delete(arguments.key)
    return 0
