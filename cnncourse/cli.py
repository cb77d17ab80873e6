"""Command line: ``python -m cnncourse {data,train,assign,pretrain,grade,grade-merge,check,lab-report}``.

Each subcommand is a small function that parses nothing itself; ``main`` builds the parser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_data_check(args: argparse.Namespace) -> int:
    from cnncourse import data

    ok = True
    print(f"{'dataset':<14} {'split':<6} {'status':<9} location")
    for name in args.dataset or data.dataset_names():
        for split in ("train", "test"):
            try:
                ds = data.load_dataset(name, split, root=args.root, download=False)
                print(f"{name:<14} {split:<6} {'verified':<9} {ds.location} ({len(ds)} images, SHA-256 ok)")
            except data.DatasetNotFoundError:
                ok = False
                print(
                    f"{name:<14} {split:<6} {'missing':<9} looked in: "
                    + ", ".join(str(r) for r in data.candidate_roots(args.root))
                )
            except data.CorruptDatasetError as exc:
                ok = False
                print(f"{name:<14} {split:<6} {'CORRUPT':<9} {exc}")
    if not ok:
        print(f"\nSet {data.ENV_VAR} to a folder with MNIST/raw and FashionMNIST/raw, or run online to download.")
    return 0 if ok else 1


def _cmd_assign(args: argparse.Namespace) -> int:
    from cnncourse.grading.release import MarkerError, ReleaseConflictError, release

    try:
        written = release(args.sources, args.out, force=args.force)
    except (MarkerError, FileNotFoundError, ReleaseConflictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in written:
        print(f"released {p}")
    return 0


def _model_kwargs(pairs: list[str], builder=None) -> dict[str, object]:
    """``["depth=20", "residual=false"]`` -> ``{"depth": 20, "residual": False}``.

    A value stays a string when the builder's default for that keyword is a string
    (``variant=1998`` is the name of a variant, not a number).
    """
    import inspect

    defaults = {} if builder is None else {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --model-arg expects KEY=VALUE, got {pair!r}")
        lowered = raw.lower()
        if isinstance(defaults.get(key), str):
            out[key] = raw
        elif lowered in ("true", "false"):
            out[key] = lowered == "true"
        else:
            try:
                out[key] = int(raw)
            except ValueError:
                try:
                    out[key] = float(raw)
                except ValueError:
                    out[key] = raw
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from cnncourse import models, train
    from cnncourse.data import load_dataset

    if args.model not in models.list_models():
        raise SystemExit(f"error: unknown model {args.model!r}; expected one of: {', '.join(models.list_models())}")
    kwargs = _model_kwargs(args.model_arg, getattr(models, args.model))
    model = models.get_model(args.model, **kwargs)
    tr, te = load_dataset(args.dataset, "train"), load_dataset(args.dataset, "test")
    if args.train_size:
        tr = tr.take(args.train_size, seed=args.seed)
    # what the model declares: transform (e.g. LeNet-5 1998: eq. 9), loss and target (an autoencoder's is its input)
    pipeline = train.input_pipeline(model, tr)
    hist = train.fit(
        model,
        tr,
        te,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        **pipeline._asdict(),
    )
    from cnncourse.distributed import is_main

    if not is_main():  # under torchrun the other ranks hold the same weights; rank 0 reports and saves
        return 0
    print(hist)
    accuracy = hist.last["val_acc"]  # None when the target is not class labels (an autoencoder)
    if accuracy is None:
        print(f"final test loss: {hist.last['val_loss']:.4f}")
    else:
        print(f"final test accuracy: {accuracy:.4f}")
    if args.out:
        train.save_checkpoint(
            args.out,
            model,
            model_name=args.model,
            model_kwargs=kwargs,
            dataset=args.dataset,
            epochs=args.epochs,
            seed=args.seed,
            test_accuracy=accuracy,
            test_loss=hist.last["val_loss"],
            history=hist.as_dicts(),
        )
        print(f"saved {args.out}")
    return 0


def _dataset_name(value: str) -> str:
    """An argparse ``type``: a name from ``data.dataset_names()``.

    A ``type`` rather than ``choices``, because ``choices`` would import torch (through
    ``cnncourse.data``) whenever the parser is built, ``--help`` included.
    """
    from cnncourse.data import dataset_names

    if value not in dataset_names():
        raise argparse.ArgumentTypeError(f"unknown dataset {value!r}; expected one of: {', '.join(dataset_names())}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m cnncourse`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m cnncourse", description="cnncourse: an open course on CNNs.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("data", help="find and verify the datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    check = dsub.add_parser("check", help="list which datasets are found where, with checksums")
    check.add_argument("--root", default=None, help="a data folder to search first")
    check.add_argument(
        "--dataset",
        action="append",
        type=_dataset_name,
        default=None,
        help="check only this dataset (repeatable; default all)",
    )
    check.set_defaults(func=_cmd_data_check)

    a = sub.add_parser("assign", help="release student versions of source labs")
    a.add_argument("sources", nargs="+", help="source notebooks or folders of them")
    a.add_argument("--out", required=True, help="folder for the student notebooks")
    a.add_argument(
        "--force", action="store_true", help="overwrite notebooks in --out even when edited since their release"
    )
    a.set_defaults(func=_cmd_assign)

    t = sub.add_parser("train", help="train a registered model and save a checkpoint")
    t.add_argument("model", help="a name from cnncourse.models.list_models()")
    t.add_argument("--dataset", default="mnist", type=_dataset_name, help="a name from data.dataset_names()")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    t.add_argument("--batch-size", type=int, default=128, help="per process under torchrun")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--train-size", type=int, default=None, help="train on a random subset of this size")
    t.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for the model builder, e.g. variant=1998 or depth=56 (repeatable); "
        "inputs are padded to the model's input_size",
    )
    t.add_argument("--out", type=Path, default=None, help="checkpoint path")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    from cnncourse import cli_labreport, cli_pretrain
    from cnncourse.grading import cli_check, cli_grade, merge

    cli_pretrain.add_parser(sub)
    cli_grade.add_parser(sub)
    merge.add_parser(sub)
    cli_check.add_parser(sub)
    cli_labreport.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cnncourse``."""
    args = build_parser().parse_args(argv)
    return args.func(args)
