from pathlib import Path

from tabserve.serving.cpus import usable_cpus


def test_a_container_cpu_quota_caps_the_scoring_threads(tmp_path: Path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # limits.cpu: 1.5 -> 2 threads at most
    assert usable_cpus(tmp_path) == min(2, usable_cpus(tmp_path / "none"))
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(tmp_path) == 1


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cpus(tmp_path) == usable_cpus(tmp_path / "none") >= 1


def test_a_server_builds_the_large_batch_session_after_the_version_serves(demo_bundle: Path):
    from tabserve.core.runtime import RuntimeOptions
    from tabserve.serving.manager import ModelManager

    manager = ModelManager(RuntimeOptions(batch_threads=0, batch_min_rows=33))
    model = manager.load(demo_bundle)
    manager.loader.submit(lambda: None).result()  # everything queued on the loader thread has run
    assert model.runtime.batch_session is not model.runtime.session
    manager.close()
