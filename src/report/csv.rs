//! `records.csv`: one row per record, the same columns as `report.json`'s `records`.

use std::fmt::Write as _;

use crate::audit::Record;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One row per record, the same columns as `report.json`'s `records` (`source` empty but for `best`).
pub fn records_csv(records: &[&Record]) -> String {
    let mut s = String::from(
        "cell,dataset,model,batch_size,epoch,dropout,defense,epsilon,test_accuracy,layer,num_params,features,feature_dim,target,family,\
         source,bits,ci95_low,ci95_high,bits_per_dim,r2,accuracy,n_train,n_test,constant_fits,upper_bits,bound,warnings\n",
    );
    for r in records {
        let k = &r.keys;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            k.cell,
            csv_field(&k.dataset),
            csv_field(&k.model),
            k.batch_size,
            k.epoch,
            k.dropout,
            csv_field(&k.defense),
            opt(k.epsilon),
            k.test_accuracy,
            csv_field(&r.layer),
            r.num_params,
            r.features,
            r.feature_dim,
            csv_field(&r.target),
            csv_field(&r.family),
            csv_field(r.source.as_deref().unwrap_or_default()),
            r.bits,
            r.ci95[0],
            r.ci95[1],
            opt(r.bits_per_dim),
            opt(r.r2),
            opt(r.accuracy),
            r.n_train,
            r.n_test,
            r.constant_fits,
            opt(r.upper_bits),
            r.bound.as_deref().unwrap_or_default(),
            csv_field(&r.warnings.join("; "))
        );
    }
    s
}
