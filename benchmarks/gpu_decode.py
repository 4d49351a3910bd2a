"""bench_gpu's decode section (--decode, issue #23): the input path alone, CPU against device, and how far apart
their crops are. A mixin of bench_gpu.Bench, which holds the settings, the images and what the sections found.

- throughput: the job's DataLoader at its batch and default workers, each batch copied to the device and normalized
  (gpu_forward.measure_loader), once with decode cpu (the workers decode with PIL, resize and crop) and once with
  decode gpu (the workers read each JPEG and check it in draft mode; the device decodes the batch with
  torchvision.io.decode_jpeg and resizes it). On the CPU device (--smoke) the "device" is this process's CPU:
  the path's code, not its speed. Beside them, one worker's share alone, each path's items made one after another
  on one thread: what bounds the gpu path when the device keeps up.
- equality: the bench's JPEGs and copies of a few of them (grey, 4:4:4, progressive, EXIF-turned), each through
  both paths: the largest difference in grey levels and the mean (the issue's bound: 3 and 0.5), and the draft
  check's pHash against the full decode's (analysis/data/jpeg_bytes.py).
"""

from __future__ import annotations

import io
import time

EQUALITY_FILES = 64  # of the bench's JPEGs; 4 of them copied 4 ways more


class DecodeSection:
    def job_decode(self) -> str:
        """decode auto's choice on this device (a probe JPEG decoded there): what the job's loader runs."""
        from analysis.data.preprocessing import make_preprocessing  # noqa: PLC0415
        from jobs import runtime  # noqa: PLC0415

        cfg = self.config()
        return runtime.pick_decode("auto", self.device, make_preprocessing(cfg.preprocess, cfg.image_size))[0]

    def section_decode(self) -> None:
        from benchmarks.gpu_forward import measure_loader  # noqa: PLC0415
        from jobs import runtime  # noqa: PLC0415

        cfg, batch, workers = self.config(), self.job_batch(), runtime.pick_workers("auto", self.device)
        rates = {}
        for decode in ("cpu", "gpu"):
            rates[decode], _ = measure_loader(cfg, self.device, workers, batch, self.s.loader_seconds, decode)
        self.found["decode"] = rates
        share = {decode: self.measure_worker_share(decode) for decode in ("cpu", "gpu")}
        where = f"on {self.device}" if self.device.type == "cuda" else "in the main process (the CPU: its code only)"
        print(
            f"decode + preprocess alone, batch {batch}, {workers} workers (the job's): cpu (PIL decodes, resizes "
            f"and crops in the workers) {rates['cpu']:.1f} img/s; gpu (the workers read and check in draft mode, "
            f"decode_jpeg and the resize {where}) {rates['gpu']:.1f} img/s = {rates['gpu'] / rates['cpu']:.2f} x; "
            f"a worker's share alone, ms per image: cpu {share['cpu']:.2f}, gpu {share['gpu']:.2f} "
            f"(= {share['cpu'] / share['gpu']:.2f} x the images per worker)",
            flush=True,
        )
        t = time.perf_counter()
        worst, mean, worst_image, bits, n = self.measure_equality()
        bound = "within" if worst <= 3 and worst_image <= 0.5 else "OUTSIDE"
        print(
            f"decode gpu against cpu on {n} JPEGs at {self.s.size} px ({self.device}): max |diff| {worst} grey "
            f"levels, mean {mean:.3f}, worst image's mean {worst_image:.3f} ({bound} the issue's 3 and 0.5); "
            f"pHash of the draft check against the full decode: at most {bits} bits "
            f"({time.perf_counter() - t:.1f} s)",
            flush=True,
        )

    def measure_worker_share(self, decode: str) -> float:
        """ms per image of what a worker does for each file with `decode` (read, sha256, check or decode, pHash,
        preprocess), one after another on one thread, for about loader_seconds."""
        from analysis.data.dataset import ImageDataset  # noqa: PLC0415
        from analysis.data.discovery import find_images  # noqa: PLC0415
        from analysis.data.jpeg_bytes import JpegBytesDataset  # noqa: PLC0415
        from analysis.data.preprocessing import make_preprocessing  # noqa: PLC0415

        cfg = self.config()
        found = find_images(cfg.data)
        pre = make_preprocessing(cfg.preprocess, cfg.image_size)
        dataset_type = JpegBytesDataset if decode == "gpu" else ImageDataset
        dataset = dataset_type(found.records, pre, cfg.max_image_pixels, cfg.max_file_bytes, found.root)
        dataset[0]  # warm-up: imports, the first file's pages
        n, t = 0, time.perf_counter()
        while n < 8 or time.perf_counter() - t < self.s.loader_seconds:
            dataset[n % len(dataset)]
            n += 1
        return (time.perf_counter() - t) / n * 1000

    def measure_equality(self) -> tuple[int, float, float, int, int]:
        """(largest |device - cpu| in grey levels, mean, the worst image's mean, largest pHash distance in bits,
        files) over the bench's first JPEGs and copies of four of them, both paths as the job runs them."""
        from analysis.data.dataset import ImageDataset, collate_images  # noqa: PLC0415
        from analysis.data.decoding import decode_image  # noqa: PLC0415
        from analysis.data.device_decode import DeviceDecoder  # noqa: PLC0415
        from analysis.data.jpeg_bytes import JpegBytesDataset  # noqa: PLC0415
        from analysis.data.perceptual_hash import compute_phash  # noqa: PLC0415
        from analysis.data.preprocessing import make_preprocessing  # noqa: PLC0415

        cfg = self.config()
        pre = make_preprocessing(cfg.preprocess, cfg.image_size)
        datas = [p.read_bytes() for p in sorted(self.data.iterdir())[:EQUALITY_FILES]]
        datas += [copy for data in datas[:4] for copy in make_copies(data)]
        cpu = collate_images([ImageDataset([], pre, 10**9, 10**9).make_item(i, d) for i, d in enumerate(datas)])
        items = [JpegBytesDataset([], pre, 10**9, 10**9).make_item(i, d) for i, d in enumerate(datas)]
        dev = DeviceDecoder(pre, self.device, 10**9)(collate_images(items))
        diff = (dev.images.cpu().int() - cpu.images.int()).abs().float()  # (B, 3, N, N)
        full = [compute_phash(decode_image(d, 10**9).image) for d in datas]
        bits = max(bin((a ^ item.phash) & (2**64 - 1)).count("1") for a, item in zip(full, items))
        per_image = diff.mean(dim=(1, 2, 3))
        return int(diff.max()), float(diff.mean()), float(per_image.max()), bits, len(datas)


def make_copies(data: bytes) -> list[bytes]:
    """The JPEG again as grey, 4:4:4, progressive, and with an EXIF orientation of 6 (a quarter turn)."""
    from PIL import Image  # noqa: PLC0415

    im, out = Image.open(io.BytesIO(data)).convert("RGB"), []
    exif = Image.Exif()
    exif[0x0112] = 6
    for image, kw in (
        (im.convert("L"), {}),
        (im, {"subsampling": 0}),
        (im, {"progressive": True}),
        (im, {"exif": exif}),
    ):
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=85, **kw)
        out.append(buf.getvalue())
    return out
