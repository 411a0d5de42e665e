//! # Stores: where the cluster's state lives
//!
//! Both stores implement [`kulisse_core::store::Store`], the etcd-shaped interface the API
//! server writes through. [`embedded`] is one redb file on local disk (the default);
//! [`etcd`] talks to a real etcd, exactly the database a real cluster uses.

pub mod embedded;
pub mod etcd;
