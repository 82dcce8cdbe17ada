"""Stand-ins shared by tests: models whose outputs are fixed, to check the code around them exactly."""

import torch


class FixedDetector(torch.nn.Module):
    """A torchvision-style detector returning the given outputs (dicts of pixel-edge boxes, scores, labels)
    for images 0, 1, ...; it checks that it receives float images in [0, 1]."""

    def __init__(self, outputs):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.outputs = outputs

    def forward(self, images):
        assert all(im.dtype == torch.float32 and im.max() <= 1 for im in images)
        return [self.outputs[i] for i in range(len(images))]
