"""The first seed's generator must follow identity: its targets, 3 seeds.

  python -m experiments.ablations.facegen_identity --scale cpu

The face GAN conditioned on the three views' landmarks as well as the 31
features (`experiments/configs/facegen_landmarks.py`: `facegen_quick.py`'s
10,000 steps) on 8,000 synthetic faces of 1,600 people, measured on 400
faces of 100 other people (`facegen.evaluate`). The targets: an Inception
Score (the jaxface identity classifier) at least 70 % of the true faces',
and under 5 mm from the true face. One variant: the comparison with the
first seed's 31 features alone is the `facegen` study's
`landmarks-condition` variant (3,000 steps, 2,000 faces).
"""

import dataclasses

from experiments.ablations import facegen
from experiments.ablations import runner

STUDY = runner.Study(
    name='facegen_identity',
    title='Face GAN conditioned on the views\' landmarks: the identity '
          'targets',
    config='experiments/configs/facegen_landmarks.py',
    variants=(runner.Variant('landmarks-condition', ()),),
    metrics=facegen.METRICS,
    evaluate=facegen.evaluate,
    scales={
        'cpu': runner.Scale(
            overrides=('train.eval_every=10000',
                       'train.checkpoint_every=10000'),
            data=dataclasses.replace(
                facegen.MULTIVIEW_32, num_train=8000, num_test=400,
                identities=(('train', 1600), ('test', 100)))),
    },
)

if __name__ == '__main__':
  runner.main(STUDY)
