//! Parsing + validating the CBT intake example in both load modes (R9),
//! beside the bare YAML parse as the baseline the ratios are taken against.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use heartrule_domain::LoadMode;
use heartrule_script_engine::loader::load;

const CBT_INTAKE: &str = include_str!("../../../examples/scripts/cbt_intake.yaml");

fn load_cbt_intake(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_cbt_intake");
    group.throughput(Throughput::Bytes(CBT_INTAKE.len() as u64));
    group.bench_function("yaml_value_only", |b| {
        b.iter(|| serde_yaml::from_str::<serde_yaml::Value>(black_box(CBT_INTAKE)).is_ok())
    });
    for (name, mode) in [
        ("strict", LoadMode::Strict),
        ("compatible", LoadMode::Compatible),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| load(black_box(CBT_INTAKE), mode).map(|parsed| parsed.warnings.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, load_cbt_intake);
criterion_main!(benches);
