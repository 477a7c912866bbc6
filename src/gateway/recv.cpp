#include "gateway/recv.h"

#ifdef FLOTILLA_DRAIN_AWARE_RECV
namespace flotilla::gateway {

namespace {
// Access to Boost 1.74's epoll_reactor::descriptor_state::try_speculative_ (private; the reactor
// is its friend). An explicit instantiation may name private members in its template arguments
// ([temp.spec.general]); the friend function hands the pointer to member out. Names are unique
// across src/ (the sanitizer build is a unity build).
struct SpeculativeFlags {
  friend auto speculative_member(SpeculativeFlags);
};
template <typename Tag, auto Pointer>
struct ExposeDescriptorMember {
  friend auto speculative_member(Tag) { return Pointer; }
};
template struct ExposeDescriptorMember<SpeculativeFlags, &RecvReactor::descriptor_state::try_speculative_>;

// And to basic_socket_acceptor's implementation (private, with no derived-class way in).
struct AcceptorImpl {
  friend auto acceptor_impl_member(AcceptorImpl);
};
template <typename Tag, auto Pointer>
struct ExposeAcceptorMember {
  friend auto acceptor_impl_member(Tag) { return Pointer; }
};
template struct ExposeAcceptorMember<AcceptorImpl, &Acceptor::impl_>;

bool* speculative_flags(Socket& socket) {
  RecvReactor::descriptor_state* state = recv_detail::SocketAccess::impl(socket).reactor_data_;
  return state ? (state->*speculative_member(SpeculativeFlags{})) : nullptr;
}
}  // namespace

namespace recv_detail {
RecvReactor::per_descriptor_data& acceptor_reactor_data(Acceptor& acceptor) {
  return (acceptor.*acceptor_impl_member(AcceptorImpl{})).get_implementation().reactor_data_;
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
