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


def write_small_tracking_config(path, train_slps, metrics) -> None:
    """The small GTR config both tracking learning tests train: a tiny transformer on test_resnet crops,
    4 epochs x 25 steps of 2 clips, Adam 3e-3, scored on the test metrics ``metrics``."""
    path.write_text(f"""
task = "tracking"
model = {{"d_model": 32, "nhead": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "num_layers_attn_head": 1,
         "dropout": 0.0, "dropout_attn_head": 0.0,
         "embedding_meta": {{"pos": {{"mode": "fixed"}}, "temp": {{"mode": "fixed"}}}},
         "encoder_cfg": {{"model_name": "test_resnet", "in_chans": 3}}}}
dataset = {{"train_dataset": {{"slp_files": {list(train_slps)!r}, "crop_size": 12, "padding": 0, "clip_length": 8}}}}
runner = {{"metrics": {{"test": {list(metrics)!r}}}, "persistent_tracking": {{"test": True}}}}
tracker = {{"window_size": 8}}
optimizer = {{"name": "Adam", "lr": 3e-3}}
epochs = 4
iterations_per_epoch = 25
batch_size = 2
num_workers = 0
random_seed = 0
logs_save_path = "runs/logs"
model_save_path = "runs/ckpt/{{model_name}}_{{epoch}}.pth"
""")
