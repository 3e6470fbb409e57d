"""`orbit-fast bench`: this machine's per-core rates for the data kernels."""

from __future__ import annotations

import click


@click.command("bench")
@click.option("--size-mb", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Size of the in-memory corpus (half random, half text-like).")  # fmt: skip
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Best of this many passes per stage.")  # fmt: skip
@click.option("--json", "json_out", is_flag=True, help="One JSON object per stage.")
def bench_cmd(size_mb: int, rounds: int, json_out: bool) -> None:
    """Measure chunking, chunk ids and compression on one core of this machine.

    Also says how many cores keep a 10GbE link (1.25 GB/s, 1192 MiB/s) busy with each codec.
    """
    import msgspec

    from orbit_fast.kernel_bench import measure

    rates = measure(size_mb << 20, rounds)
    if json_out:
        for r in rates:
            click.echo(msgspec.json.encode(r).decode())
        return
    click.echo(f"{'stage (one core, ' + str(size_mb) + ' MiB mixed corpus)':44} "
               f"{'MiB/s':>8}  cores for 10GbE")  # fmt: skip
    for r in rates:
        click.echo(f"{r.stage:44} {r.bytes_per_s / (1 << 20):8.0f}  {r.cores_for_10gbe}")
