"""experiments/pod_communication.py: the exact parameter count and the cost formulas."""

import conftest

pod = conftest.load_experiment("pod_communication")


def test_paper_model_parameter_count():
  # torchvision's ResNet-50 has 25,557,032 parameters, 2048 x 1000 + 1000 of them its
  # classifier; the expander: 2048x8192 + 2 x 8192x8192 kernels, 2 biases, 2 BN (scale, bias).
  config = pod.load_config_file(
      f"{conftest.CONFIG_DIR}/imagenet_resnet50.py:ep100")
  params = pod.abstract_params(config)
  assert pod.count(params["backbone"]) == 25_557_032 - (2048 * 1000 + 1000)
  assert pod.count(params["expander"]) == (2048 * 8192 + 2 * 8192 * 8192 + 2 * 8192
                                           + 2 * 2 * 8192)


def test_allreduce_costs():
  # 2 (N - 1) / N x bytes / bandwidth: 8 chips, 1 GB at 100 GB/s -> 17.5 ms.
  assert abs(pod.allreduce_ms(1e9, 8, 100) - 17.5) < 1e-9
  assert pod.allreduce_ms(1e9, 1, 100) == 0
  # One node of H100s is NVLink alone; 16 GPUs add an InfiniBand ring over 2 nodes.
  assert pod.h100_allreduce_ms(1e9, 8) == pod.allreduce_ms(1e9, 8, pod.H100_NVLINK.send_gb_s)
  assert pod.h100_allreduce_ms(1e9, 16) > pod.h100_allreduce_ms(1e9, 8)
  assert pod.efficiency(100, 10, overlap=False) == 100 / 110
  assert pod.efficiency(90, 10, overlap=True) == 1.0
