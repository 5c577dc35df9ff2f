"""What a user would otherwise reach for, run on the same recordings (in its own environment: fer needs
TensorFlow and OpenCV, which the serving environment does not carry). Standalone on purpose.

  python peer.py fer   RECORDING SAMPLE_FPS            fer.Video.analyze with fer's own FER detector
  python peer.py naive RECORDING DATABASE_URL          OpenCV decode of every frame, Haar detect,
                                                       Keras classify, one INSERT + COMMIT per face
Prints one JSON line: mode, video_seconds, wall_seconds, frames, results.
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def video_seconds(path: str) -> tuple[float, float]:
    import cv2

    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    cap.release()
    return frames / fps, fps


def run_fer(path: str, sample_fps: float) -> dict:
    import cv2
    from fer.classes import Video
    from fer.fer import FER

    # fer polls and closes GUI windows even with display=False; headless OpenCV has none.
    cv2.destroyAllWindows = lambda: None
    cv2.waitKey = lambda delay=0: -1

    seconds, fps = video_seconds(path)
    detector = FER(mtcnn=False)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        results = Video(path, outdir=out).analyze(
            detector, display=False, frequency=max(1, round(fps / sample_fps)), save_frames=False,
            save_video=False, annotate_frames=False, zip_images=False)
    return {"mode": "fer.Video", "video_seconds": seconds, "wall_seconds": time.perf_counter() - start,
            "frames": len(results), "results": sum(1 for r in results if r)}


def run_naive(path: str, database_url: str) -> dict:
    import cv2
    import numpy as np
    import psycopg
    from tensorflow.keras.models import load_model

    seconds, _ = video_seconds(path)
    weights = os.path.join(os.path.dirname(str(__import__("fer").__file__)), "data", "emotion_model.hdf5")
    model = load_model(weights, compile=False)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    conn = psycopg.connect(database_url)
    conn.execute("CREATE TABLE IF NOT EXISTS peer_naive_rows (video text, frame int, x int, y int, "
                 "label text, confidence real)")
    conn.commit()
    start = time.perf_counter()
    cap = cv2.VideoCapture(path)
    frames = rows = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        for (x, y, w, h) in cascade.detectMultiScale(gray, 1.1, 5):
            face = cv2.resize(gray[y:y + h, x:x + w], (64, 64)).astype("float32") / 255.0
            probs = model.predict(((face - 0.5) * 2.0)[None, :, :, None], verbose=0)[0]
            conn.execute("INSERT INTO peer_naive_rows VALUES (%s, %s, %s, %s, %s, %s)",
                         (path, frames, int(x), int(y), labels[int(np.argmax(probs))], float(probs.max())))
            conn.commit()
            rows += 1
        frames += 1
    conn.close()
    return {"mode": "naive loop", "video_seconds": seconds, "wall_seconds": time.perf_counter() - start,
            "frames": frames, "results": rows}


if __name__ == "__main__":
    mode, path, arg = sys.argv[1:4]
    result = run_fer(path, float(arg)) if mode == "fer" else run_naive(path, arg)
    print(json.dumps(result))
