"""MLflow "models from code" definition of the Atelier text-to-image model.

MLflow stores this file (not a pickled object) with the model; the pipeline folder is an artifact holding only
safetensors weights and JSON configs. Input: a DataFrame with columns prompt, seed, steps, guidance and optionally
negative_prompt. Output: a DataFrame with png (bytes) and pixels_sha256 per row.
"""

from __future__ import annotations

import hashlib
import io

import mlflow
import pandas as pd


class AtelierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from atelier.models.generator import load_generator

        # either backend; a LoRA model refuses a base model whose weights digest differs from the recorded one
        self.pipeline = load_generator(context.artifacts["pipeline"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for r in model_input.to_dict("records"):
            image = self.pipeline(
                [str(r["prompt"])],
                seed=int(r["seed"]),
                steps=int(r["steps"]),
                guidance=float(r["guidance"]),
                negative_prompt=str(r.get("negative_prompt") or ""),
            )[0]
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            rows.append({"png": buf.getvalue(), "pixels_sha256": hashlib.sha256(image.tobytes()).hexdigest()})
        return pd.DataFrame(rows)


mlflow.models.set_model(AtelierModel())
