// Reaching a private member of a library class (Boost 1.74 Asio internals the gateway relies on:
// see ADR 0007). An explicit template instantiation may name private members in its arguments
// ([temp.spec.general]); the friend function it defines hands the pointer to member out.
//
// Use, in one .cpp per tag:
//   namespace flotilla::gateway::private_access {
//   struct QueueMember { friend auto member(QueueMember); };
//   template struct Expose<QueueMember, &boost::asio::detail::scheduler::op_queue_>;
//   }
//   ... scheduler.*member(private_access::QueueMember{}) ...
// Tags live in this namespace (the friend must be declared where the template defines it), so
// their names must be unique across the program.
#pragma once

namespace flotilla::gateway::private_access {

template <typename Tag, auto Pointer>
struct Expose {
  friend auto member(Tag) { return Pointer; }
};

}  // namespace flotilla::gateway::private_access
