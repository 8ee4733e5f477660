"""The small face GAN of `facegen_quick.py`, conditioned on the three
views' landmarks as well as the 31 features (`facegen.condition`).

  jaxface data synth --out data/mv32x8 --kinds multiview --resolution 32 \
      --num-train 8000 --num-test 400 --identities-train 1600 \
      --identities-test 100 --workers 2
  jaxface train --config experiments/configs/facegen_landmarks.py \
      --workdir runs/facegen_landmarks --config.data.dir=data/mv32x8
  jaxface eval --workdir runs/facegen_landmarks --data data/mv32x8

Why: the 31 features of the first seed do not determine the face well
enough for its targets. Without any GAN, a ridge regression from them to
the canonical map ends 6.85 mm from the held-out faces, and from them with
their squares and products 6.21 mm; from the views' landmarks it ends
2.82 mm away (`python -m experiments.diagnostics.facegen_identity --data D`;
README, "Why the face GAN ignored identity").
"""

from experiments.configs import facegen_quick


def get_config():
  config = facegen_quick.get_config()
  config.facegen.condition = 'landmarks'
  return config
