"""Runs MediaPipe's hand landmarker over a list of images; writes OpenPose JSON per image.

Executed by the Python of the separate MediaPipe environment that `handflow.data.detect`
creates (mediapipe==0.10.21 needs numpy<2 and ships its models), so it imports nothing from
handflow and nothing beyond NumPy, OpenCV and MediaPipe:

  VENV/bin/python handflow/data/mediapipe_worker.py JOBS.jsonl

JOBS.jsonl: one {"image": path, "labels": path} per line. Each output is written atomically;
an image without a detected right hand gets {"people": []} (a missed detection).
"""

from __future__ import annotations

import json
import os
import sys


def openpose_doc(landmarks_xy, width: int, height: int, score: float) -> dict:
  """MediaPipe's 21 normalised landmarks (its order is OpenPose's: wrist, then thumb, index,
  middle, ring, pinky from base to tip) -> an OpenPose hand in pixels, every keypoint carrying
  the hand's detection score (MediaPipe gives no per-keypoint confidence)."""
  flat = []
  for x, y in landmarks_xy:
    flat += [round(float(x) * width, 3), round(float(y) * height, 3), round(float(score), 4)]
  if len(flat) != 63:
    raise ValueError(f"expected 21 landmarks, got {len(flat) // 3}")
  return {"version": 1.3, "people": [{"hand_right_keypoints_2d": flat}]}


def _write(path: str, doc: dict):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as fh:
    json.dump(doc, fh)
  os.replace(tmp, path)


def main(jobs_path: str) -> int:
  import cv2
  import mediapipe as mp

  done = missed = 0
  # Static images: every image is detected on its own (no tracking across the list).
  with mp.solutions.hands.Hands(
    static_image_mode=True, max_num_hands=2, model_complexity=1, min_detection_confidence=0.3
  ) as hands:
    with open(jobs_path) as fh:
      for line in fh:
        job = json.loads(line)
        image = cv2.imread(job["image"])
        if image is None:
          print(f"mediapipe_worker: cannot read image {job['image']}", file=sys.stderr)
          return 2
        h, w = image.shape[:2]
        result = hands.process(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        doc = {"version": 1.3, "people": []}
        for lms, side in zip(
          result.multi_hand_landmarks or [], result.multi_handedness or [], strict=False
        ):
          cls = side.classification[0]
          # MediaPipe labels handedness as seen in a mirrored (selfie) image: "Left" is a right
          # hand in an unmirrored camera image.
          if cls.label == "Left":
            doc = openpose_doc([(p.x, p.y) for p in lms.landmark], w, h, cls.score)
            break
        missed += not doc["people"]
        _write(job["labels"], doc)
        done += 1
  print(json.dumps({"images": done, "missed": missed}))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
