"""Self-supervised pre-training (SSFER stage I: a masked autoencoder on unlabelled faces) and the
``semifer pretrain`` / ``semifer pipeline ssfer`` commands."""
