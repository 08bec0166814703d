"""experiments/summarize_trace.py on small traces in jax.profiler's trace-JSON format."""

import gzip
import json

import pytest

import conftest

summary = conftest.load_experiment("summarize_trace")

WINDOW = summary.DEFAULT_WINDOW


def meta(pid, name, tid=None):
  event = {"ph": "M", "pid": pid, "name": "thread_name" if tid else "process_name",
           "args": {"name": name}}
  if tid:
    event["tid"] = tid
  return event


def op(pid, tid, event_name, ts, dur, **args):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": event_name,
          "args": args}


def write(path, events):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    json.dump({"displayTimeUnit": "ns", "metadata": {}, "traceEvents": events}, f)
  return str(path)


def test_gpu_streams_categories_parts_and_host_gap(tmp_path):
  gpu, host, stream, nccl, overhead, python = 1, 701, 13, 14, 99, 5
  events = [
      meta(gpu, "/device:GPU:0"), meta(gpu, "Stream #13(Kernel)", stream),
      meta(gpu, "Stream #14(Kernel)", nccl), meta(gpu, "CUPTI overhead", overhead),
      meta(host, "/host:CPU"), meta(host, "python", python),
      op(host, python, WINDOW, 0, 1000, steps="2"),
      op(gpu, stream, "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc",
         100, 300, hlo_op="cudnn-conv.1",
         name="jvp(VICReg)/backbone/conv1/conv_general_dilated"),
      op(gpu, stream, "loop_convert_fusion_2", 400, 100, hlo_op="loop_convert_fusion.2",
         name="transpose(jvp(VICReg))/backbone/layer1_0_bn1/convert_element_type"),
      op(gpu, stream, "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTT", 500, 100,
         hlo_op="gemm_fusion_dot.3", name="jvp(VICReg)/expander/linear0/dot_general"),
      op(gpu, stream, "input_reduce_fusion_7", 600, 50, hlo_op="input_reduce_fusion.7",
         name="optimizer/jit(norm)/reduce_sum"),
      op(gpu, stream, "mystery_kernel", 650, 50, hlo_op="custom-call.9"),
      op(gpu, nccl, "ncclDevKernel_AllReduce_Sum_f32_RING_LL", 200, 300,
         hlo_op="all-reduce.4"),
      op(gpu, overhead, "CUPTI overhead event", 700, 100),
      op(gpu, stream, "loop_add_fusion", 2000, 100, hlo_op="loop_add_fusion.1"),  # after
  ]
  s = summary.summarize(write(tmp_path / "host.trace.json.gz", events), WINDOW)
  assert s["kind"] == "GPU stream" and s["events"] == 6 and s["steps"] == 2
  assert s["by_category"]["convolution"] == 300
  assert s["by_category"]["elementwise fusions"] == 100  # convert is not a convolution
  assert s["by_category"]["matmul/gemm"] == 100
  assert s["by_category"]["reductions/BatchNorm"] == 50
  assert s["by_category"]["collectives"] == 300
  assert s["by_category"]["other"] == 50
  assert s["other"][0][0] == "mystery_kernel [custom-call.9]"
  assert s["by_part"]["trunk forward"]["convolution"] == 300
  assert s["by_part"]["trunk backward"]["elementwise fusions"] == 100
  assert s["by_part"]["expander forward"]["matmul/gemm"] == 100
  assert s["by_part"]["optimizer"]["reductions/BatchNorm"] == 50
  assert s["by_part"]["no name stack"]["collectives"] == 300
  # Busy 100-700 (the all-reduce overlaps the convolution): the rest of 1000 is host gap.
  assert s["busy_us"] == 600 and s["before_us"] == 100 and s["after_us"] == 300
  summary.print_tables(s)


HLO = """HloModule jit_train_step, is_scheduled=true

%fused_computation.7 (param_0: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  ROOT %multiply.2 = f32[4]{0} multiply(%param_0, %param_0), metadata={op_name="jit(train_step)/optimizer/mul"}
}

%fused_computation.8 (param_0.1: f32[2,8,8,3], param_1.1: f32[3,3,3,4]) -> f32[2,8,8,4] {
  %param_0.1 = f32[2,8,8,3]{3,2,1,0} parameter(0)
  %param_1.1 = f32[3,3,3,4]{3,2,1,0} parameter(1)
  ROOT %convolution-window-dilated.8 = f32[2,8,8,4]{3,2,1,0} convolution(%param_0.1, %param_1.1), window={size=3x3}, dim_labels=b01f_01io->b01f
}

ENTRY %main.9 (p: f32[4], x: f32[2,8,8,3]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  %x = f32[2,8,8,3]{3,2,1,0} parameter(1)
  %convolution.5 = f32[2,8,8,4]{3,2,1,0} convolution(%x, %x), window={size=3x3}, dim_labels=b01f_01io->b01f, metadata={op_name="jit(train_step)/jvp(VICReg)/backbone/conv1/conv_general_dilated"}
  %ynn_fusion.8 = f32[2,8,8,4]{3,2,1,0} fusion(%x, %x), kind=kCustom, calls=%fused_computation.8
  ROOT %fusion.7 = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused_computation.7
}
"""


def test_cpu_ops_nested_time_and_names_from_hlo(tmp_path):
  host, worker, python = 701, 3, 5
  events = [
      meta(host, "/host:CPU"), meta(host, "tf_XLAEigen/1", worker),
      meta(host, "python", python),
      op(host, python, "PjitFunction(jit(train_step))", 0, 5),
      op(host, worker, "ThunkExecutor::Execute", 10, 100),
      op(host, worker, "while.3", 10, 50, hlo_op="while.3", hlo_module="jit_train_step"),
      op(host, worker, "add.4", 20, 20, hlo_op="add.4", hlo_module="jit_train_step"),
      op(host, worker, "end: add.4", 40, 0, hlo_op="add.4"),
      op(host, worker, "convolution.5", 60, 30, hlo_op="convolution.5"),
      op(host, worker, "fusion.7", 90, 10, hlo_op="fusion.7"),
      op(host, worker, "ynn_fusion.8", 100, 5, hlo_op="ynn_fusion.8"),
  ]
  hlo = tmp_path / "jit_train_step.hlo.txt"
  hlo.write_text(HLO)
  s = summary.summarize(write(tmp_path / "vm.trace.json.gz", events), WINDOW,
                        hlo_path=str(hlo))
  assert s["kind"] == "XLA:CPU op" and s["events"] == 5 and s["window"] == ""
  assert s["by_category"]["other"] == 30  # the while loop's own time, without its body
  assert s["by_category"]["elementwise fusions"] == 20 + 10
  assert s["by_category"]["convolution"] == 30 + 5  # the fusion holds a convolution
  assert s["by_part"]["trunk forward"]["convolution"] == 30
  assert s["by_part"]["optimizer"]["elementwise fusions"] == 10  # fusion: from its body
  assert s["by_part"]["no name stack"]["convolution"] == 5
  assert s["busy_us"] == s["wall_us"] == 95


def test_a_trace_without_device_events_is_an_error(tmp_path):
  path = write(tmp_path / "x.trace.json.gz", [meta(1, "/host:CPU")])
  with pytest.raises(ValueError, match="no device events"):
    summary.summarize(path)
