//! Quick per-op profile of one ResNet50 training step (batch 64, 32x32).
use autograd::{ops, Graph, Mode};
use nn::{ResNet, ResNetConfig};
use std::collections::BTreeMap;
use tensor::Tensor;

fn main() {
    let (model, store) = ResNet::new(ResNetConfig::resnet50(Some(10))).unwrap();
    let x = Tensor::full(&[64, 32, 32, 3], 0.5);
    let labels: Vec<usize> = (0..64).map(|i| i % 10).collect();
    for it in 0..4 {
        let t0 = std::time::Instant::now();
        let mut g = Graph::new(&store, Mode::TRAIN);
        g.enable_profile();
        let xv = g.input(x.clone());
        let out = model.forward(&mut g, xv).unwrap();
        let loss = ops::softmax_cross_entropy(&mut g, out.logits.unwrap(), &labels);
        let t1 = t0.elapsed();
        let _grads = g.backward(loss);
        let t2 = t0.elapsed();
        println!("step {it}: forward {:?} total {:?} -> {:.1} img/s", t1, t2, 64.0 / t2.as_secs_f64());
        if it == 3 {
            let mut agg: BTreeMap<&str, (f64, f64, f64)> = BTreeMap::new();
            for op in &g.profile().unwrap().ops {
                let e = agg.entry(op.name).or_default();
                e.0 += op.forward.as_secs_f64();
                e.1 += op.backward.as_secs_f64();
                e.2 += op.forward_flops;
            }
            for (k, (f, b, fl)) in agg {
                println!("{k:24} fwd {:8.1} ms  bwd {:8.1} ms  fwd {:6.1} GFLOP/s", f * 1e3, b * 1e3, fl / f / 1e9);
            }
        }
    }
}
