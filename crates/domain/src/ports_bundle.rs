//! The set of adapters the domain services run on.

use crate::audit::AuditLog;
use crate::engine::ScriptEngine;
use crate::ports::{
    Clock, IdGenerator, MessageHistory, ScriptCache, ScriptRepository, SessionCache,
    SessionRepository,
};
use crate::privacy::UserDataStore;
use crate::retention::CacheJanitor;
use std::sync::Arc;

/// Names the adapter types of one deployment. The services are generic over
/// it; `?Sized` lets a composition root choose adapters at run time with
/// `dyn` trait objects.
pub trait Ports: Send + Sync + 'static {
    type Scripts: ScriptRepository + ?Sized;
    type Sessions: SessionRepository + ?Sized;
    type History: MessageHistory + ?Sized;
    type ScriptCache: ScriptCache + ?Sized;
    type SessionCache: SessionCache + ?Sized;
    type Engine: ScriptEngine + ?Sized;
    type Clock: Clock + ?Sized;
    type Ids: IdGenerator + ?Sized;
    /// Where audit events are kept.
    type Audit: AuditLog + ?Sized;
    /// A user's stored data, for export and erasure.
    type UserData: UserDataStore + ?Sized;
    /// Removes cache entries and reports failures (the session cache itself
    /// fails open), for erasures.
    type CacheJanitor: CacheJanitor + ?Sized;
}

/// The adapter instances, shared by the services.
pub struct Adapters<P: Ports> {
    pub scripts: Arc<P::Scripts>,
    pub sessions: Arc<P::Sessions>,
    pub history: Arc<P::History>,
    pub script_cache: Arc<P::ScriptCache>,
    pub session_cache: Arc<P::SessionCache>,
    pub engine: Arc<P::Engine>,
    pub clock: Arc<P::Clock>,
    pub ids: Arc<P::Ids>,
    /// The audit log.
    pub audit: Arc<P::Audit>,
    /// A user's stored data.
    pub user_data: Arc<P::UserData>,
    /// Cache removal with error reports.
    pub cache_janitor: Arc<P::CacheJanitor>,
}

impl<P: Ports> Clone for Adapters<P> {
    fn clone(&self) -> Self {
        Self {
            scripts: Arc::clone(&self.scripts),
            sessions: Arc::clone(&self.sessions),
            history: Arc::clone(&self.history),
            script_cache: Arc::clone(&self.script_cache),
            session_cache: Arc::clone(&self.session_cache),
            engine: Arc::clone(&self.engine),
            clock: Arc::clone(&self.clock),
            ids: Arc::clone(&self.ids),
            audit: Arc::clone(&self.audit),
            user_data: Arc::clone(&self.user_data),
            cache_janitor: Arc::clone(&self.cache_janitor),
        }
    }
}
