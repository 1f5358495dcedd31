"""Rule cases for fusionjax/claims/depth.py: {claim ID: [(numbers, verdict), ...]}."""

from fusionjax.claims.base import CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED

# The last full report's numbers (digits, 400 steps, 3 seeds): plain-20 and plain-56 final training errors, ResNet
# test errors at 20, 56 and 110 layers, each seed's value on a 360-image test split (multiples of 1/360).
_PLAIN_20, _PLAIN_56 = [0.0, 0.0, 0.0], [0.3132, 0.3653, 0.3939]
_RESNET_TEST = [[0.01111, 0.01389, 0.01944], [0.01944, 0.03056, 0.03333], [0.01667, 0.03056, 0.075]]
# He et al. 2016, Table 6 (CIFAR-10): ResNet-20/56/110 at 8.75/6.97/6.43%, spread as three seeds of ±0.15 points.
_RESNET_TEST_HE = [[0.086, 0.0875, 0.089], [0.068, 0.0697, 0.071], [0.063, 0.0643, 0.0655]]
_RESNET_TEST_WORSE = [[0.011, 0.014, 0.017], [0.025, 0.028, 0.031], [0.036, 0.041, 0.045]]

RULE_CASES = {
    "O2": [
        # Plain-56 degrades; the ResNets' 20 → 56 seeds touch at 7/360: within noise, so one half holds.
        (dict(plain_shallow_train_error=_PLAIN_20, plain_deeper_train_error=_PLAIN_56,
              residual_test_error=_RESNET_TEST), PARTLY),
        (dict(plain_shallow_train_error=_PLAIN_20, plain_deeper_train_error=_PLAIN_56,
              residual_test_error=_RESNET_TEST_HE), CONFIRMED),
        # Plain-56 fits as well as plain-20 (seeds overlap) and the ResNets get worse with depth.
        (dict(plain_shallow_train_error=[0.0, 0.002, 0.004], plain_deeper_train_error=[0.001, 0.003, 0.01],
              residual_test_error=_RESNET_TEST_WORSE), REFUTED),
        # Both plain nets fit every training image and the ResNets' test errors overlap: nothing settled.
        (dict(plain_shallow_train_error=_PLAIN_20, plain_deeper_train_error=[0.0, 0.0, 0.0],
              residual_test_error=_RESNET_TEST), NOT_MEASURABLE),
    ],
    "O3": [
        # The last full report: plain-56 is far from a minimum (training loss 1.06).
        (dict(plain_train_loss=[0.9624, 1.074, 1.143], residual_train_loss=[0.0001291, 0.000166, 0.001808],
              plain_centre_lowest=[True, True, True], residual_centre_lowest=[True, True, True],
              plain_nonconvex=[0.07202, 0.1136, 0.1413], residual_nonconvex=[0.01662, 0.05264, 0.06925]),
         NOT_MEASURABLE),
        # Both at low loss, but a plain seed's trained weights are not the lowest point of their slice.
        (dict(plain_train_loss=[0.002, 0.003, 0.004], residual_train_loss=[0.0001, 0.0002, 0.0003],
              plain_centre_lowest=[True, False, True], residual_centre_lowest=[True, True, True],
              plain_nonconvex=[0.2, 0.25, 0.3], residual_nonconvex=[0.01, 0.02, 0.03]), NOT_MEASURABLE),
        (dict(plain_train_loss=[0.002, 0.003, 0.004], residual_train_loss=[0.0001, 0.0002, 0.0003],
              plain_centre_lowest=[True, True, True], residual_centre_lowest=[True, True, True],
              plain_nonconvex=[0.07202, 0.1136, 0.1413], residual_nonconvex=[0.01662, 0.05264, 0.06925]),
         CONFIRMED),
        (dict(plain_train_loss=[0.002, 0.003, 0.004], residual_train_loss=[0.0001, 0.0002, 0.0003],
              plain_centre_lowest=[True, True, True], residual_centre_lowest=[True, True, True],
              plain_nonconvex=[0.04, 0.1136, 0.1413], residual_nonconvex=[0.01662, 0.05264, 0.06925]), PARTLY),
        (dict(plain_train_loss=[0.002, 0.003, 0.004], residual_train_loss=[0.0001, 0.0002, 0.0003],
              plain_centre_lowest=[True, True, True], residual_centre_lowest=[True, True, True],
              plain_nonconvex=[0.01662, 0.05264, 0.06925], residual_nonconvex=[0.07202, 0.1136, 0.1413]), REFUTED),
    ],
    "O4": [
        # The last full report, ResNet-110: one post-activation seed misclassifies 3 of 1,437 training images.
        (dict(pre_train_loss=[0.0005327, 0.0005964, 0.0006265], post_train_loss=[0.004118, 0.006, 0.01274],
              pre_train_error=[0.0, 0.0, 0.0], post_train_error=[0.0, 0.0, 0.002088]), CONFIRMED),
        (dict(pre_train_loss=[0.0005327, 0.005, 0.015], post_train_loss=[0.004118, 0.006, 0.01274],
              pre_train_error=[0.0, 0.0, 0.0007], post_train_error=[0.0, 0.0, 0.002088]), PARTLY),
        (dict(pre_train_loss=[0.05, 0.08, 0.1], post_train_loss=[0.004118, 0.006, 0.01274],
              pre_train_error=[0.01, 0.02, 0.02], post_train_error=[0.0, 0.0, 0.002088]), REFUTED),
        # Both fit every training image on every seed: the losses no longer say which trains better.
        (dict(pre_train_loss=[0.0005327, 0.0005964, 0.0006265], post_train_loss=[0.004118, 0.006, 0.01274],
              pre_train_error=[0.0, 0.0, 0.0], post_train_error=[0.0, 0.0, 0.0]), NOT_MEASURABLE),
    ],
    "O6": [
        (dict(train_error=[0.0]), CONFIRMED),  # the last full report's DenseNet-BC-250
        (dict(train_error=[0.01]), CONFIRMED),  # the threshold itself is low
        (dict(train_error=[0.03]), PARTLY),
        (dict(train_error=[0.2]), REFUTED),
    ],
}
