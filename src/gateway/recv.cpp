#include "gateway/recv.h"

#include "gateway/private_member.h"

#ifdef FLOTILLA_DRAIN_AWARE_RECV
namespace flotilla::gateway {

// Boost 1.74 keeps the epoll reactor's per-descriptor speculative-operation flags private (the
// reactor is their friend), and basic_socket_acceptor its implementation (no derived-class way in).
namespace private_access {
struct DescriptorSpeculativeFlags {
  friend auto member(DescriptorSpeculativeFlags);
};
struct AcceptorImplementation {
  friend auto member(AcceptorImplementation);
};
template struct Expose<DescriptorSpeculativeFlags, &RecvReactor::descriptor_state::try_speculative_>;
template struct Expose<AcceptorImplementation, &Acceptor::impl_>;
}  // namespace private_access

namespace {
bool* speculative_flags(Socket& socket) {
  RecvReactor::descriptor_state* state = recv_detail::SocketAccess::impl(socket).reactor_data_;
  return state ? (state->*member(private_access::DescriptorSpeculativeFlags{})) : nullptr;
}
}  // namespace

namespace recv_detail {
RecvReactor::per_descriptor_data& acceptor_reactor_data(Acceptor& acceptor) {
  return (acceptor.*member(private_access::AcceptorImplementation{})).get_implementation().reactor_data_;
}

void mark_readable(Socket& socket) {
  if (bool* flags = speculative_flags(socket)) flags[asio::detail::epoll_reactor::read_op] = true;
}
}  // namespace recv_detail

void adopt_accepted(Socket& socket) {
  auto& impl = recv_detail::SocketAccess::impl(socket);
  impl.state_ |= asio::detail::socket_ops::internal_non_blocking;
  impl.state_ &= ~asio::detail::socket_ops::possible_dup;
  if (bool* flags = speculative_flags(socket)) flags[asio::detail::epoll_reactor::read_op] = false;
}

bool reads_speculatively(Socket& socket) {
  bool* flags = speculative_flags(socket);
  return !flags || flags[asio::detail::epoll_reactor::read_op];
}

}  // namespace flotilla::gateway
#endif
