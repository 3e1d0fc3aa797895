"""Models: backbones for small faces, any timm model, and the classifier returning (feat, logits)."""
from semifer.models.backbones import MODELS, WideResNet, list_models, register_model, takes_img_size
from semifer.models import cnn  # noqa: F401  (registers cnn_small)
from semifer.models import pretrained  # noqa: F401  (registers openclip_vit_b16)
from semifer.models.classifier import FERClassifier, check_model_name, create_model, load_backbone_checkpoint

__all__ = ["MODELS", "FERClassifier", "WideResNet", "check_model_name", "create_model", "list_models",
           "load_backbone_checkpoint", "register_model", "takes_img_size"]
