use std::fmt;
use std::marker::PhantomData;

use switchyard_core::BoxError;
use tower::discover::Discover;
use tower::Layer;

use crate::{Balance, Weight};

/// Builds a [`Balance`] with equal weights over a [`Discover`] stream.
pub struct BalanceLayer<Req> {
    _req: PhantomData<fn(Req)>,
}

/// Builds a [`Balance`] that honours each endpoint's [`Weight`].
pub struct WeightedBalanceLayer<Req> {
    _req: PhantomData<fn(Req)>,
}

impl<Req> BalanceLayer<Req> {
    /// Creates the layer.
    pub fn new() -> Self {
        Self { _req: PhantomData }
    }
}

impl<Req> WeightedBalanceLayer<Req> {
    /// Creates the layer.
    pub fn new() -> Self {
        Self { _req: PhantomData }
    }
}

impl<D, Req> Layer<D> for BalanceLayer<Req>
where
    D: Discover + Send + 'static,
    D::Key: Send,
    D::Service: Clone + Send + Sync + 'static,
    D::Error: Into<BoxError>,
{
    type Service = Balance<D::Service, Req>;

    fn layer(&self, discover: D) -> Self::Service {
        Balance::new(discover)
    }
}

impl<D, Req> Layer<D> for WeightedBalanceLayer<Req>
where
    D: Discover + Send + 'static,
    D::Key: Send,
    D::Service: Weight + Clone + Send + Sync + 'static,
    D::Error: Into<BoxError>,
{
    type Service = Balance<D::Service, Req>;

    fn layer(&self, discover: D) -> Self::Service {
        Balance::weighted(discover)
    }
}

macro_rules! common_impls {
    ($name:ident) => {
        impl<Req> Default for $name<Req> {
            fn default() -> Self {
                Self::new()
            }
        }
        impl<Req> Clone for $name<Req> {
            fn clone(&self) -> Self {
                Self::new()
            }
        }
        impl<Req> fmt::Debug for $name<Req> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}
common_impls!(BalanceLayer);
common_impls!(WeightedBalanceLayer);
