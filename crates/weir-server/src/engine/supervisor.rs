//! Restarting failed views.
//!
//! Every view has a supervisor task. When the view's dataflow fails (an
//! expression error, a panic in an operator, an I/O error), the supervisor
//! asks the view's restart strategy for a delay, marks the view RESTARTING,
//! waits, and rebuilds the dataflow: its state tables are cleared and it
//! backfills from its input's current contents, which yields exactly the
//! state an uninterrupted run would have (the same result as resuming from
//! the last checkpoint and replaying the log, without keeping the log
//! around for it). Views reading from the view are rebuilt after it. When
//! the strategy gives up, the view is FAILED and reading it says so.

use std::time::Instant;

use weir_dataflow::runtime::UPSTREAM_STOPPED;

use super::*;
use crate::catalog::{ViewHealth, ViewState};

impl Engine {
    /// Watch the view `name` (whose restart bookkeeping is `health`) and
    /// restart it when it fails.
    pub(super) fn supervise(&self, name: &str, health: Arc<Mutex<ViewHealth>>) {
        let me = self.me.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            loop {
                // The current incarnation of the view, if it still exists.
                let relation = {
                    let Some(engine) = me.upgrade() else {
                        return;
                    };
                    let r = engine.catalog.read().get(&name);
                    r
                };
                let Some(relation) = relation else {
                    return;
                };
                let RelationKind::View {
                    dataflow,
                    health: current,
                    ..
                } = &relation.kind
                else {
                    return;
                };
                if !Arc::ptr_eq(current, &health) {
                    return; // dropped and recreated: another supervisor owns it
                }
                let error = dataflow.wait_failed().await;
                if error.message == UPSTREAM_STOPPED {
                    // Not this view's failure: the view it reads restarts
                    // (and rebuilds this one) or is gone for good.
                    {
                        let mut h = health.lock();
                        h.state = ViewState::Restarting;
                        h.last_error = Some(error);
                    }
                    loop {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        let Some(engine) = me.upgrade() else {
                            return;
                        };
                        let current = engine.catalog.read().get(&name);
                        match current {
                            Some(r) if Arc::ptr_eq(&r, &relation) => continue,
                            Some(_) => break,
                            None => return,
                        }
                    }
                    continue;
                }
                drop(relation);
                let Some(engine) = me.upgrade() else {
                    return;
                };
                if !engine.is_current(&name, &health) {
                    return;
                }
                let delay = {
                    let mut h = health.lock();
                    h.last_error = Some(error.clone());
                    match h.tracker.on_failure(Instant::now()) {
                        Some(d) => {
                            h.state = ViewState::Restarting;
                            Some(d)
                        }
                        None => {
                            h.state = ViewState::Failed;
                            None
                        }
                    }
                };
                let Some(delay) = delay else {
                    tracing::error!(view = %name, error = %error, "view failed; its restart strategy gave up");
                    return;
                };
                tracing::warn!(view = %name, error = %error, delay_ms = delay.as_millis() as u64, "view failed; restarting");
                drop(engine);
                tokio::time::sleep(delay).await;
                let Some(engine) = me.upgrade() else {
                    return;
                };
                if let Err(e) = engine.restart_view(&name, &health).await {
                    tracing::warn!(view = %name, error = %e, "restart failed");
                }
            }
        });
    }

    /// True when `name` is the view whose bookkeeping is `health`.
    fn is_current(&self, name: &str, health: &Arc<Mutex<ViewHealth>>) -> bool {
        matches!(
            self.catalog.read().get(name).as_deref(),
            Some(Relation { kind: RelationKind::View { health: h, .. }, .. }) if Arc::ptr_eq(h, health)
        )
    }

    /// Rebuild view `name` and every view reading from it.
    async fn restart_view(&self, name: &str, health: &Arc<Mutex<ViewHealth>>) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        if !self.is_current(name, health) {
            return Ok(());
        }
        // A view whose input is a view that is not running waits for that
        // view's restart, which rebuilds it too.
        let upstreams = self.catalog.read().get(name).map(|r| match &r.kind {
            RelationKind::View { upstreams, .. } => upstreams.clone(),
            RelationKind::Table { .. }
            | RelationKind::Source { .. }
            | RelationKind::PlainView { .. } => Vec::new(),
        });
        for upstream in upstreams.unwrap_or_default() {
            if let Some(up) = self.catalog.read().get(&upstream) {
                if !matches!(up.view_status(), None | Some(DataflowStatus::Running)) {
                    return Ok(());
                }
            }
        }
        let mut order = vec![name.to_string()];
        order.extend(self.all_dependents(name));
        let mut rebuilt = Vec::new();
        for view in &order {
            let Some(relation) = self.catalog.read().get(view) else {
                continue;
            };
            // A dependent may already run again (rebuilt with its parent).
            let running = matches!(relation.view_status(), Some(DataflowStatus::Running));
            if view != name && running {
                continue;
            }
            if let RelationKind::View { health, .. } = &relation.kind {
                health.lock().state = ViewState::Restarting;
                rebuilt.push((view.clone(), Arc::clone(health)));
            }
            self.rebuild_view(&relation).await?;
        }
        self.durable.unlogged_change.store(true, Ordering::SeqCst);
        self.close_epoch().await;
        // Readable again only once the backfill is committed.
        for (view, health) in rebuilt {
            let running = matches!(
                self.catalog.read().get(&view).and_then(|r| r.view_status()),
                Some(DataflowStatus::Running)
            );
            if running {
                health.lock().state = ViewState::Running;
                tracing::info!(view = %view, "view restarted");
            }
        }
        Ok(())
    }

    /// Replace a view's dataflow with a fresh one backfilled from its input.
    async fn rebuild_view(&self, relation: &Relation) -> Result<()> {
        let RelationKind::View {
            dataflow,
            plan,
            upstreams,
            definition,
            health,
            sink,
        } = &relation.kind
        else {
            return Ok(());
        };
        dataflow.stop();
        relation.outlet.close();
        self.durable.sink.forget_restored(&relation.state_ids);
        for id in &relation.state_ids {
            StateTable::drop_table(&self.store, *id)?;
        }
        let statements = weir_sql::parser::parse(&relation.ddl)?;
        let options = match statements.first() {
            Some(Statement::CreateMaterializedView { options, .. }) => options,
            Some(Statement::CreateSink(s)) => &s.options,
            _ => {
                return Err(ServerError::Statement(Error::internal(
                    "a view's definition is not CREATE MATERIALIZED VIEW or CREATE SINK",
                )))
            }
        };
        let parallelism = self.parallelism_of(options)?;
        let operators = self.instantiate(plan, parallelism, &self.state_ctx, sink.clone())?;
        let (new_dataflow, outlet) = self
            .start_dataflow(&relation.name, &plan.inputs, operators, DdlMode::Replay)
            .await?;
        self.catalog.write().insert(Relation {
            name: relation.name.clone(),
            schema: Arc::clone(&relation.schema),
            state_id: relation.state_id,
            outlet,
            ddl: relation.ddl.clone(),
            state_ids: relation.state_ids.clone(),
            kind: RelationKind::View {
                dataflow: new_dataflow,
                plan: Arc::clone(plan),
                upstreams: upstreams.clone(),
                definition: definition.clone(),
                health: Arc::clone(health),
                sink: sink.clone(),
            },
        });
        Ok(())
    }
}
