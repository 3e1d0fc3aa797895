"""The evaluation suite of the FER papers, on trained semifer runs.

    kfold.py        K-fold cross-validation: one run per fold, mean ± std table (SSFER Table 5)
    cam.py          Grad-CAM maps and overlays for CNN and ViT backbones (pytorch-grad-cam)
    explain.py      the overlays, table and example grid ``semifer explain`` writes
    attack.py       FGSM restricted to Grad-CAM-focused or unfocused pixels (SSFER Table 7)
    calibration.py  temperature scaling fitted on a validation split, stored beside the weights
    report.py       one self-contained HTML page comparing run folders side by side
    data.py         images prepared for a trained model: dataset splits, or faces of photos
    cli.py          ``semifer kfold|explain|attack|calibrate|report``
"""
