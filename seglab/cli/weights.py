"""`seglab weights list | download | import`: the pretrained-weights caches (see
seglab/models/pretrained.py for how `model.encoder_weights: imagenet` finds its file)."""

from __future__ import annotations

ENCODER_HELP = "smp encoder (resnet34), tu-<timm model> (also for classification backbones), or tv-vgg16 / tv-vgg16_bn (classic models)"


def cmd_weights_list(args) -> None:
    from seglab.models.pretrained import hf_cache_dir, torch_checkpoints_dir
    from seglab.models.weights_cache import cached_weights

    rows = cached_weights()
    print(f"HF hub cache:    {hf_cache_dir()}  (HF_HUB_CACHE, else HF_HOME/hub)")
    print(f"torch hub cache: {torch_checkpoints_dir()}  (TORCH_HOME/hub/checkpoints)")
    if not rows:
        print("no pretrained weights cached; `seglab weights download ENCODER` (online) or `seglab weights import FILE --encoder ENCODER`")
        return
    width = max(len(r["encoder"]) for r in rows)
    tag_width = max(len(r["tag"]) for r in rows)
    print(f"\n{'encoder':<{width}}  {'tag':<{tag_width}}  {'MB':>8}  file")
    for r in rows:
        print(f"{r['encoder']:<{width}}  {r['tag']:<{tag_width}}  {r['bytes'] / 2**20:>8.1f}  {r['file']}")


def cmd_weights_download(args) -> None:
    from seglab.models.pretrained import encoder_ref, pretrained_spec, resolve, sha256

    spec = pretrained_spec(encoder_ref(args.encoder), args.tag)
    path = resolve(spec, download=True)
    cache = spec.files[0].cache_dir()
    print(f"{spec.label}: {path}  (sha256 {sha256(path)[:12]})")
    print(f"for a machine without network, copy {cache} to the same path there (or point "
          f"{'HF_HOME' if spec.files[0].hub == 'hf' else 'TORCH_HOME'} at the copy's parent)")


def cmd_weights_import(args) -> None:
    from seglab.models.pretrained import encoder_ref, pretrained_spec, sha256
    from seglab.models.weights_cache import import_weights

    spec = pretrained_spec(encoder_ref(args.encoder), args.tag)
    dest = import_weights(args.file, spec, force=args.force)
    print(f"{spec.label}: {args.file} -> {dest}  (sha256 {sha256(dest)[:12]})")
    print(f"configs with model.encoder_weights: {args.tag} now start from it offline")


def register(sub) -> None:
    w = sub.add_parser("weights", help="pretrained encoder weights: list the cache, download, import a file")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    ls = wsub.add_parser("list", help="encoders with weights in the HF / torch hub caches")
    ls.set_defaults(func=cmd_weights_list)

    d = wsub.add_parser("download", help="fetch a tag's weights into the standard cache (needs network)")
    d.add_argument("encoder", help=ENCODER_HELP)
    d.add_argument("--tag", default="imagenet", help="pretrained tag: imagenet (default) or another tag of the encoder's library")
    d.set_defaults(func=cmd_weights_download)

    i = wsub.add_parser("import", help="put a weights file obtained elsewhere into the cache, keys converted and checked")
    i.add_argument("file", help="state dict / checkpoint (.pth, .pt, .bin, .safetensors; torchvision, timm or smp key names)")
    i.add_argument("--encoder", required=True, help=ENCODER_HELP)
    i.add_argument("--tag", default="imagenet", help="the tag configs will name it by (default imagenet)")
    i.add_argument("--force", action="store_true", help="replace a file already cached for this tag")
    i.set_defaults(func=cmd_weights_import)
