//! Installing the rendered maps: every agent's part assembled with the stale domains, the
//! generation written and switched (`maps::install`); at start, and again when freshness
//! changes what unknown recipients get.

use std::sync::Arc;

use anyhow::Context;
use proto::Snapshot;

use crate::render::{AgentMaps, AgentPart, Rendered, assemble, render_agent};
use crate::{Applied, Server, lock, maps};

/// Renders all agents' maps, with `replace` (snapshot and its rendered part) standing for its
/// agent's applied snapshot. Other agents' parts are planned once and kept.
pub(super) fn render_all(
    server: &Server,
    replace: Option<(&str, &Snapshot, &Arc<AgentPart>)>,
) -> anyhow::Result<Rendered> {
    let cfg = server.cfg();
    let applied: Vec<(String, Option<Arc<Applied>>, &str)> = {
        let live = lock(&server.live);
        live.iter()
            .map(|(id, l)| (id.clone(), l.applied.clone(), cfg.config.primary(id)))
            .collect()
    };
    let formats = &cfg.config.output.formats;
    let mut agents = Vec::new();
    let mut kept: Vec<Arc<AgentPart>> = Vec::new();
    for (id, applied, primary) in &applied {
        match (replace, applied) {
            (Some((agent, snap, _)), _) if agent == id => agents.push(AgentMaps {
                id,
                version: snap.version,
                hash: &snap.hash,
                primary,
                content: &snap.content,
            }),
            (_, Some(a)) => {
                let maps = AgentMaps {
                    id,
                    version: a.version,
                    hash: &a.hash,
                    primary,
                    content: &a.content,
                };
                let part = match a.part.get() {
                    Some(p) => Arc::clone(p),
                    None => {
                        let p = Arc::new(render_agent(&maps, formats)?);
                        let _ = a.part.set(Arc::clone(&p));
                        p
                    }
                };
                kept.push(part);
                agents.push(maps);
            }
            (_, None) => {}
        }
    }
    let mut kept = kept.iter();
    let mut with = Vec::with_capacity(agents.len());
    for a in &agents {
        let part = match replace {
            Some((agent, _, part)) if agent == a.id => part,
            _ => kept.next().context("a kept part per applied agent")?,
        };
        with.push((a, Arc::clone(part)));
    }
    let deferred = server.deferred_domains(replace.map(|(agent, _, _)| agent));
    Ok(assemble(&with, formats, &deferred)?)
}

/// Installs `rendered` as the live maps, running `prepare` in the new generation first; the
/// files that did not change since the last install are linked, not written. `ready` is asked,
/// once the files are written, whether they may go live; its error aborts the install.
pub(super) fn install(
    server: &Server,
    rendered: &Rendered,
    ready: impl FnOnce() -> Result<(), String>,
) -> anyhow::Result<()> {
    let loaded = server.cfg();
    let cfg = &loaded.config;
    let limit = std::time::Duration::from_secs(cfg.output.after_apply_timeout_secs);
    let prepare = |dir: &std::path::Path| {
        ready()?;
        crate::hooks::run_blocking(&cfg.output.prepare, Some(dir), limit)
    };
    let mut last = lock(&server.installed);
    maps::install(&cfg.output.dir, rendered, &loaded.maps, prepare, &mut last)?;
    *lock(&server.deferring) = Some(rendered.deferred.clone());
    Ok(())
}

/// Renders and installs every configured agent's applied snapshot, after a reload added or
/// removed agents. The caller holds the apply lock.
pub(crate) fn install_current(server: &Server) -> anyhow::Result<()> {
    let rendered = render_all(server, None)?;
    install(server, &rendered, || Ok(()))
}

/// Installs the maps again when the domains whose unknown recipients they should defer are
/// not those the live maps defer (an agent went stale, was held, or is fresh again): only
/// `stale_domains` and the small files are written, the address maps are linked. Once maps
/// were installed, and never before an agent has a snapshot applied. A failure is logged and
/// tried again at the next check.
pub fn render_if_deferring_changed(server: &Arc<Server>) {
    let changed = || {
        let live = lock(&server.deferring).clone();
        live.is_some_and(|live| live != server.deferred_domains(None))
    };
    // Looked at first without the apply lock, which a long apply holds for seconds: the
    // freshness loop that calls this every second does not wait for it unless it must.
    if !changed() {
        return;
    }
    let _apply = lock(&server.apply_lock);
    if !changed() {
        return;
    }
    let wanted = server.deferred_domains(None);
    let result = render_all(server, None).and_then(|r| install(server, &r, || Ok(())));
    match result {
        Ok(()) => tracing::warn!(
            deferred = ?wanted,
            "maps installed again for a freshness change: unknown recipients are deferred (450) at the domains listed, refused (550) elsewhere"
        ),
        Err(e) => tracing::error!(
            error = %format!("{e:#}"),
            "cannot install the maps with the new stale domains"
        ),
    }
}

/// At start: renders every agent's applied snapshot and installs the maps if they are missing or
/// differ. Returns whether anything was installed.
pub fn render_at_start(server: &Arc<Server>) -> anyhow::Result<bool> {
    let _apply = lock(&server.apply_lock);
    if lock(&server.live).values().all(|l| l.applied.is_none()) {
        return Ok(false);
    }
    let rendered = render_all(server, None)?;
    {
        // The counts are not stored with a snapshot; set them now that nothing else holds it.
        let mut live = lock(&server.live);
        for (id, c) in &rendered.counts {
            if let Some(a) = live
                .get_mut(id)
                .and_then(|l| l.applied.as_mut())
                .and_then(Arc::get_mut)
            {
                a.counts = *c;
            }
        }
    }
    server.refresh_metrics();
    let loaded = server.cfg();
    let cfg = &loaded.config;
    if maps::is_current(&cfg.output.dir, &rendered, &loaded.maps) {
        *lock(&server.deferring) = Some(rendered.deferred.clone());
        return Ok(false);
    }
    install(server, &rendered, || Ok(())).context("installing the maps at start")?;
    tracing::info!(dir = %cfg.output.dir.display(), "maps rendered again at start (missing or different)");
    Ok(true)
}
