//! `kbus groups`: list, describe, lag, delete and reset consumer groups, over the admin
//! client's group operations. Tables are tab-separated with a header line, so they read in a
//! terminal and cut/awk alike.

use std::io::Write;

use bus::admin::{MemberAssignment, ResetSpec};

use crate::args::Args;
use crate::connect;

pub const HELP: &str = "kbus groups list\n\
kbus groups describe GROUP\n\
kbus groups lag GROUP                 table: topic partition committed hwm lag (- where no commit), then the total\n\
kbus groups delete GROUP...\n\
kbus groups reset GROUP -t|--topic T... (--to-earliest | --to-latest | --to-datetime MS | --to-offset N) [--dry-run]\n\
reset refuses a group with members: stop its consumers first";

fn line(out: &mut impl Write, s: std::fmt::Arguments) -> Result<(), String> {
    writeln!(out, "{s}").map_err(|e| format!("stdout: {e}"))
}

pub async fn run(mut args: Args, brokers: &str) -> Result<(), String> {
    let sub = args
        .positional()
        .ok_or("groups: expected list, describe, lag, delete or reset")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match sub.as_str() {
        "list" => {
            args.finish()?;
            let client = connect(brokers).await?;
            let groups = client
                .admin()
                .list_groups()
                .await
                .map_err(|e| e.to_string())?;
            for g in groups {
                let state = g.state.as_ref().map(|s| s.as_str()).unwrap_or("-");
                let ptype = if g.protocol_type.is_empty() {
                    "-"
                } else {
                    &g.protocol_type
                };
                line(&mut out, format_args!("{}\t{ptype}\t{state}", g.group_id))?;
            }
            Ok(())
        }
        "describe" => {
            let group = args
                .positional()
                .ok_or("groups describe: GROUP is missing")?;
            args.finish()?;
            let client = connect(brokers).await?;
            let d = client
                .admin()
                .describe_group(&group)
                .await
                .map_err(|e| format!("{group}: {e}"))?;
            line(
                &mut out,
                format_args!(
                    "group {} state {} protocol-type {} protocol {} coordinator {} members {}",
                    d.group_id,
                    d.state,
                    or_dash(&d.protocol_type),
                    or_dash(&d.protocol),
                    d.coordinator,
                    d.members.len()
                ),
            )?;
            for m in &d.members {
                line(
                    &mut out,
                    format_args!(
                        "member {} client-id {} host {}{}",
                        m.member_id,
                        or_dash(&m.client_id),
                        or_dash(&m.client_host),
                        m.group_instance_id
                            .as_deref()
                            .map(|i| format!(" instance {i}"))
                            .unwrap_or_default()
                    ),
                )?;
                match &m.assignment {
                    MemberAssignment::Consumer(parts) => {
                        for (topic, ps) in parts {
                            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                            line(
                                &mut out,
                                format_args!("  assigned {topic} {}", ps.join(",")),
                            )?;
                        }
                    }
                    MemberAssignment::Opaque(b) => line(
                        &mut out,
                        format_args!("  assignment {} opaque bytes", b.len()),
                    )?,
                    MemberAssignment::Invalid { bytes, error } => line(
                        &mut out,
                        format_args!("  assignment {} undecodable bytes: {error}", bytes.len()),
                    )?,
                    _ => {}
                }
            }
            Ok(())
        }
        "lag" => {
            let group = args.positional().ok_or("groups lag: GROUP is missing")?;
            args.finish()?;
            let client = connect(brokers).await?;
            let lag = client
                .admin()
                .group_lag(&group)
                .await
                .map_err(|e| format!("{group}: {e}"))?;
            line(
                &mut out,
                format_args!("TOPIC\tPARTITION\tCOMMITTED\tHWM\tLAG"),
            )?;
            // Saturating: lags come from the broker, and a sum must not wrap.
            let mut total = 0i64;
            for l in &lag {
                total = total.saturating_add(l.lag.unwrap_or(0));
                line(
                    &mut out,
                    format_args!(
                        "{}\t{}\t{}\t{}\t{}",
                        l.topic,
                        l.partition,
                        or_dash_num(l.committed),
                        l.high_watermark,
                        or_dash_num(l.lag)
                    ),
                )?;
            }
            line(&mut out, format_args!("total\t\t\t\t{total}"))
        }
        "delete" => {
            let mut groups = Vec::new();
            while let Some(g) = args.positional() {
                groups.push(g);
            }
            args.finish()?;
            if groups.is_empty() {
                return Err("groups delete: GROUP is missing".into());
            }
            let client = connect(brokers).await?;
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            let results = client
                .admin()
                .delete_groups(&names)
                .await
                .map_err(|e| e.to_string())?;
            let mut failures = Vec::new();
            for (g, r) in results {
                match r {
                    Ok(()) => line(&mut out, format_args!("deleted {g}"))?,
                    Err(e) => failures.push(format!("{g}: {e}")),
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        }
        "reset" => {
            let topics = args.values(Some("-t"), "--topic")?;
            let mut specs = Vec::new();
            if args.switch(None, "--to-earliest") {
                specs.push(ResetSpec::Earliest);
            }
            if args.switch(None, "--to-latest") {
                specs.push(ResetSpec::Latest);
            }
            if let Some(ms) = args.parsed::<i64>(None, "--to-datetime")? {
                specs.push(ResetSpec::Timestamp(ms));
            }
            if let Some(o) = args.parsed::<i64>(None, "--to-offset")? {
                if o < 0 {
                    return Err(format!("--to-offset: {o} is negative"));
                }
                specs.push(ResetSpec::Offset(o));
            }
            let dry_run = args.switch(None, "--dry-run");
            let group = args.positional().ok_or("groups reset: GROUP is missing")?;
            args.finish()?;
            if topics.is_empty() {
                return Err("groups reset: --topic is missing".into());
            }
            let spec = match specs.as_slice() {
                [s] => *s,
                [] => {
                    return Err("groups reset: say where: --to-earliest, --to-latest, \
                                --to-datetime MS or --to-offset N"
                        .into());
                }
                _ => return Err("groups reset: give only one --to-* option".into()),
            };
            let client = connect(brokers).await?;
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let plan = client
                .admin()
                .reset_group_offsets(&group, &names, spec, dry_run)
                .await
                .map_err(|e| e.to_string())?;
            line(&mut out, format_args!("TOPIC\tPARTITION\tPREVIOUS\tNEW"))?;
            for r in &plan {
                let prev = r.previous.map(|p| p.to_string());
                line(
                    &mut out,
                    format_args!(
                        "{}\t{}\t{}\t{}",
                        r.topic,
                        r.partition,
                        prev.as_deref().unwrap_or("-"),
                        r.new_offset
                    ),
                )?;
            }
            if dry_run {
                eprintln!("kbus: dry run: nothing was changed");
            }
            Ok(())
        }
        other => Err(format!(
            "groups: unknown subcommand {other:?} (list, describe, lag, delete, reset)"
        )),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn or_dash_num(n: Option<i64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}
