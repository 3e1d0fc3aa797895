"""Subcommands ``semifer pretrain`` (MAE or SimCLR, SSFER stage I) and ``semifer pipeline ssfer``
(I -> II -> III, then the class-prior step IV where the recipe asks).

    semifer pretrain --config recipes/x.yaml --data SPEC[,SPEC|images:/folder] --out DIR key=value ...
    semifer pipeline ssfer --config recipes/ssfer_fer2013_cpu.yaml --data SPEC --out DIR key=value ...
"""
from __future__ import annotations


def _pretrain(args) -> int:
    from semifer.config import command_overrides
    from semifer.ssl.pretrain import load_pretrain_config, pretrain

    summary = pretrain(load_pretrain_config(args.config, command_overrides(args, "data.sources")))
    return 130 if summary.get("interrupted") else 0


def _pipeline(args) -> int:
    from semifer.ssl.pipeline import load_recipe, run_ssfer

    recipe = load_recipe(args.config, args.data, list(args.overrides))
    run_ssfer(recipe, args.out, encoder=args.encoder)
    return 0


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="self-supervised pre-training on unlabelled images: MAE on a ViT (SSFER stage I) "
                                                 "or SimCLR on any backbone (method=simclr)")
    p.add_argument("--config", help="YAML recipe with sections method, data, model, mae or simclr, train")
    p.add_argument("--data", help="comma-separated sources: dataset specs (train split) or images:/folder "
                                  "(= data.sources=...)")
    p.add_argument("--out", help="run folder (= out=...)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. train.iterations=2000 mae.norm_pix_loss=false")
    p.set_defaults(func=_pretrain)

    pl = sub.add_parser("pipeline", help="a whole method in one resumable run folder")
    methods = pl.add_subparsers(dest="method", required=True)
    s = methods.add_parser("ssfer", help="SSFER: MAE (or SimCLR) pre-training -> FaceMix -> EMA teacher "
                                              "[-> the unlabelled faces' class prior]")
    s.add_argument("--config", help="YAML recipe with sections shared, pretrain, finetune, semi, adapt")
    s.add_argument("--data", help="dataset spec (= data.train=...; also stage I's source unless set)")
    s.add_argument("--out", required=True, help="run folder holding one folder per stage")
    s.add_argument("--encoder", help="skip stage I and start stage II from this encoder checkpoint")
    s.add_argument("overrides", nargs="*",
                   help="pretrain.K=V / finetune.K=V / semi.K=V for one stage, adapt.prior=true|false; K=V for every stage "
                        "that has the key (a stage's own K=V wins)")
    s.set_defaults(func=_pipeline)
