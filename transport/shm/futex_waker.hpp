// A Waker that sleeps on the WakeArea's `sleeping` word itself with futex(2): there is no
// lock a peer could hold, so nothing a peer does (dying, stopping, scribbling) can block the
// sleeper beyond its deadline.
#pragma once

#include <memory>

#include "transport/shm/wake.hpp"

namespace chat::transport::shm {

std::unique_ptr<Waker> make_futex_waker();

}  // namespace chat::transport::shm
