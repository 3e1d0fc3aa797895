"""Face detection and alignment, shared by prediction and FaceMix.

    detector = create_detector("auto")          # mediapipe > mtcnn > haar > lbp, first installed
    faces = detect_faces(detector, rgb_uint8)   # [Face(box=(x, y, w, h), score, landmarks)]
    crop = crop_face(rgb_uint8, faces[0].box, margin=0.2, size=112)

Each detector imports its library only when built, so importing this package is cheap.
"""
from semifer.data.faces.align import crop_face, face_crops, square_around
from semifer.data.faces.base import (AUTO_ORDER, DETECTORS, Face, as_rgb_uint8, create_detector,
                                     detect_faces, list_detectors, register_detector)
from semifer.data.faces import blazeface, cascade, neural, yolo  # noqa: F401  (they register the detectors)

__all__ = ["AUTO_ORDER", "DETECTORS", "Face", "as_rgb_uint8", "create_detector", "crop_face", "face_crops",
           "detect_faces", "list_detectors", "register_detector", "square_around"]
