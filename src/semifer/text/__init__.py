"""Text encoders and class descriptions (SIT-FER's text level)."""
from semifer.text.descriptions import (DEFAULT_TEMPLATE, class_embeddings, class_texts, default_descriptions_path,
                                       load_descriptions)
from semifer.text.encoders import (TEXT_ENCODERS, TextEncoder, create_text_encoder, list_text_encoders,
                                   register_text_encoder, text_encoder_options)

__all__ = ["DEFAULT_TEMPLATE", "TEXT_ENCODERS", "TextEncoder", "class_embeddings", "class_texts",
           "create_text_encoder", "default_descriptions_path", "list_text_encoders", "load_descriptions",
           "register_text_encoder", "text_encoder_options"]
