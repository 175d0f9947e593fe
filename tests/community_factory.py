"""Community model files made here: real architectures (spandrel's own classes) with random weights,
saved the way the published files are, so tests run the loader as a user's download would be run.

Each maker returns (path, module): the file on disk and the nn.Module it was saved from.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

SEED = 0


def _seeded(build) -> nn.Module:
    torch.manual_seed(SEED)
    return build().eval()


def _esrgan_new_keys(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """spandrel's RRDBNet keys (the original ESRGAN layout, model.N...) -> Real-ESRGAN's own
    layout (conv_first, body.N.rdbK.convJ, conv_body, conv_up1/2, conv_hr, conv_last), as in
    RealESRGAN_x4plus.pth."""
    fixed = {"model.0": "conv_first", f"model.1.sub.{blocks}": "conv_body", "model.3": "conv_up1",
             "model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}
    out = {}
    for key, value in state.items():
        match = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if match:
            block, rdb, conv, kind = match.groups()
            out[f"body.{block}.rdb{rdb}.conv{conv}.{kind}"] = value
            continue
        prefix, kind = key.rsplit(".", 1)
        out[f"{fixed[prefix]}.{kind}"] = value
    return out


def realesrgan_x4plus(folder: Path, name: str = "RealESRGAN_x4plus.pth") -> tuple[Path, nn.Module]:
    """RRDBNet x4 (small: 8 features, 2 blocks), Real-ESRGAN's key layout under 'params_ema'."""
    from spandrel.architectures.ESRGAN import ESRGAN

    model = _seeded(lambda: ESRGAN(num_filters=8, num_blocks=2, scale=4))
    state = _esrgan_new_keys(model.state_dict(), blocks=2)
    torch.save({"params_ema": state}, folder / name)
    return folder / name, model


def esrgan_old_x2(folder: Path, name: str = "2x_old_esrgan.pth") -> tuple[Path, nn.Module]:
    """RRDBNet x2 in the original ESRGAN layout (model.N...), a plain state dict (most OpenModelDB files)."""
    from spandrel.architectures.ESRGAN import ESRGAN

    model = _seeded(lambda: ESRGAN(num_filters=8, num_blocks=1, scale=2))
    torch.save(model.state_dict(), folder / name)
    return folder / name, model


def compact(folder: Path, name: str = "realesr-general-x4v3.pth", channels: int = 3, scale: int = 4,
            num_conv: int = 6) -> tuple[Path, nn.Module]:
    """SRVGGNetCompact under 'params' (Real-ESRGAN's release layout); channels 1 = grey, 4 = RGBA."""
    from spandrel.architectures.Compact import Compact

    model = _seeded(lambda: Compact(num_in_ch=channels, num_out_ch=channels, num_feat=8, num_conv=num_conv,
                                    upscale=scale))
    torch.save({"params": model.state_dict()}, folder / name)
    return folder / name, model


def swinir(folder: Path, name: str = "001_classicalSR_x2_SwinIR.pth") -> tuple[Path, nn.Module]:
    """SwinIR x2 (classical, pixelshuffle; tiny: 12 channels, one stage of 2 layers, window 4) under 'params'."""
    from spandrel.architectures.SwinIR import SwinIR

    model = _seeded(lambda: SwinIR(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[2], num_heads=[2],
                                   mlp_ratio=2.0, upsampler="pixelshuffle", resi_connection="1conv"))
    torch.save({"params": model.state_dict()}, folder / name)
    return folder / name, model


def hat(folder: Path, name: str = "HAT_SRx2.pth") -> tuple[Path, nn.Module]:
    """HAT x2 (tiny: 12 channels, one stage of 2 layers, window 4) under 'params_ema'."""
    from spandrel.architectures.HAT import HAT

    model = _seeded(lambda: HAT(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=(2,), num_heads=(2,),
                                compress_ratio=3, squeeze_factor=4, mlp_ratio=2.0, num_feat=8))
    torch.save({"params_ema": model.state_dict()}, folder / name)
    return folder / name, model


def span(folder: Path, name: str = "4x_span.safetensors") -> tuple[Path, nn.Module]:
    """SPAN x4 (16 features) as safetensors, as many OpenModelDB files are."""
    from safetensors.torch import save_file
    from spandrel.architectures.SPAN import SPAN

    model = _seeded(lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / name))
    return folder / name, model


def lama(folder: Path, name: str = "big-lama.pth") -> tuple[Path, nn.Module]:
    """LaMa (the inpainting model that takes a mask), a plain state dict of 'model.model...' keys."""
    from spandrel.architectures.LaMa import LaMa

    model = _seeded(lambda: LaMa(in_nc=4, out_nc=3))  # image and mask in, image out (as big-lama)
    torch.save(model.state_dict(), folder / name)
    return folder / name, model


# ---------------------------------------------------------------- hostile files, written by hand


class _Storage:
    """Stands for one storage record while a checkpoint's pickle is written (see zip_checkpoint)."""

    def __init__(self, key: str, storage_type: type, numel: int) -> None:
        self.key, self.storage_type, self.numel = key, storage_type, numel


class _Tensor:
    """Pickles as torch.save pickles a tensor: _rebuild_tensor_v2 over a persistent storage id."""

    def __init__(self, storage: _Storage, shape: tuple[int, ...]) -> None:
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        from collections import OrderedDict

        stride = tuple(int(torch.tensor(self.shape[i + 1:]).prod()) for i in range(len(self.shape)))
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, self.shape, stride, False, OrderedDict())


def checkpoint_pickle(tensors: dict[str, tuple[int, ...]], storage_type: type = torch.FloatStorage,
                      numel: dict[str, int] | None = None) -> tuple[bytes, dict[str, int]]:
    """The data.pkl torch.save would write for {name: tensor of this shape} (storage keys "0", "1",
    ...), without any tensor existing; `numel` overrides what a storage declares. Returns the pickle
    and each storage key's declared element count."""
    import io
    import math
    import pickle

    storages = {name: _Storage(str(i), storage_type, (numel or {}).get(name, math.prod(shape)))
                for i, (name, shape) in enumerate(tensors.items())}
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=2)
    pickler.persistent_id = lambda obj: (("storage", obj.storage_type, obj.key, "cpu", obj.numel)
                                         if isinstance(obj, _Storage) else None)
    pickler.dump({name: _Tensor(storages[name], shape) for name, shape in tensors.items()})
    return buffer.getvalue(), {s.key: s.numel for s in storages.values()}


def zip_checkpoint(path: Path, data_pkl: bytes, records: dict[str, int], deflate: bool = True,
                   chunk: int = 1 << 24) -> Path:
    """A torch.save-layout zip (archive/data.pkl, archive/data/KEY, version, byteorder) whose storage
    records are `records[KEY]` zero bytes each, written deflated in chunks (never whole in memory):
    4 GB of zeros deflate to about 4 MB, the memory bomb of issue 30.4."""
    import zipfile

    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    zeros = bytes(chunk)
    with zipfile.ZipFile(path, "w", compression=method, compresslevel=1, allowZip64=True) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, size in records.items():
            with archive.open(f"archive/data/{key}", "w", force_zip64=True) as record:
                for start in range(0, size, chunk):
                    record.write(zeros[: min(chunk, size - start)])
    return path


def zip_bomb(path: Path, nbytes: int) -> Path:
    """A .pth whose one float32 tensor declares nbytes / 4 elements and whose record holds that
    many zero bytes, deflated: a file of about nbytes / 1000."""
    data_pkl, numel = checkpoint_pickle({"weight": (nbytes // 4,)})
    return zip_checkpoint(path, data_pkl, {key: count * 4 for key, count in numel.items()})
